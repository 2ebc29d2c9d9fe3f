"""A network placed for training on this process: its device, memory format, synchronised BN and DDP.

    >>> per_rank = per_rank_batch(cfg.batch_size, D.world_size())          # one line when it does not divide
    >>> placed = place_model(model, device, world=D.world_size(), sync_bn=True)
    >>> placed.raw                   # the plain module: state_dict, checkpoints, evaluation
    >>> placed.called(x1, x2)        # the module to call: DDP (and torch.compile) around it where asked

One helper for the three trainers (pretraining, the classifier protocols, detection), so that a batch that does
not divide over the ranks is the same one-line `ConfigError` everywhere, and DDP is built with the same device
ids and options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

from barlowtwins.errors import ConfigError
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.memory_format import use_channels_last


def per_rank_batch(batch_size: int, world: int, flag: str = "--batch-size") -> int:
    """Each rank's share of a global ``batch_size``; one line when it does not divide evenly over ``world``."""
    if batch_size % world:
        raise ConfigError(f"{flag} {batch_size} is global and must divide evenly over {world} processes")
    return batch_size // world


@dataclass
class Placed:
    """``raw``: the plain module (on its device); ``called``: what the training step calls (``raw`` itself on
    one process); ``channels_last``: whether its inputs should be channels-last (`as_input_format`)."""

    raw: nn.Module
    called: nn.Module
    channels_last: bool = False


def place_model(model: nn.Module, device: torch.device, *, world: int, sync_bn: bool = False,
                channels_last: bool = False, compile: bool = False, grad_compression: str | None = None,
                **ddp_options) -> Placed:
    """``model`` on ``device``; channels-last where asked and safe (`use_channels_last`); under ``world`` > 1
    BN synchronised across ranks (``sync_bn``, our `convert_sync_batchnorm`) and DDP around it (``ddp_options``
    passed on; ``grad_compression="bf16"`` adds PyTorch's bf16 gradient hook); ``compile``: torch.compile last."""
    model.to(device)
    fmt = use_channels_last(model, device, channels_last)
    if fmt:
        model.to(memory_format=torch.channels_last)
    if world > 1 and sync_bn:
        model = D.convert_sync_batchnorm(model, device.type)
    called: nn.Module = model
    if world > 1:
        called = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **ddp_options)
        if grad_compression == "bf16":
            called.register_comm_hook(None, default_hooks.bf16_compress_hook)
    if compile:
        called = cast(nn.Module, torch.compile(called))  # an OptimizedModule: a Module that compiles its forward
    return Placed(model, called, fmt)

__all__ = ["Placed", "per_rank_batch", "place_model"]
