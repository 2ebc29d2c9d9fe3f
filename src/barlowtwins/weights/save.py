"""Save a backbone with its architecture, so that it loads without flags.

    >>> backbone = create_backbone("resnet18", stem="small", width=32)
    >>> save_backbone(backbone, "backbone.safetensors", image_size=32)   # architecture and input size recorded
    >>> load_backbone("backbone.safetensors")                 # the same network, no flags
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from barlowtwins.errors import CheckpointError, ConfigError
from barlowtwins.models.barlow_twins import BarlowTwins
from barlowtwins.runtime.files import atomic_write, save_atomic
from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.weights.run_files import BACKBONE_NAME, SAFETENSORS_NAME
from barlowtwins.weights.sources import _field_problem as field_problem
from barlowtwins.weights.sources import arch_from_config

ARCH_KEY = "barlowtwins.arch"


def backbone_state(backbone: nn.Module | dict) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies of a module's (or state dict's) tensors; refuses non-finite weights."""
    state = backbone.state_dict() if isinstance(backbone, nn.Module) else backbone
    out = {k: v.detach().cpu().contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    bad = nonfinite_names(out.items())
    if bad:
        raise CheckpointError(f"backbone has non-finite weights ({', '.join(bad[:3])}); not writing it")
    return out


def save_safetensors_atomic(state: dict[str, torch.Tensor], path: str | os.PathLike, arch: dict | None = None) -> None:
    """Write ``state`` as safetensors (temporary file + rename), the architecture in the metadata."""
    from safetensors.torch import save_file

    metadata = {ARCH_KEY: json.dumps(arch or {}, default=list), "format": "pt"}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def write_run_backbone(backbone: nn.Module, run_dir: str | os.PathLike, config: dict | None = None) -> None:
    """Write ``<run_dir>/backbone.pth`` and ``backbone.safetensors`` atomically (the trainer calls this at every
    checkpoint, so an interrupted or ``--max-steps`` run always has a loadable backbone)."""
    state = backbone_state(backbone)
    save_atomic(state, Path(run_dir) / BACKBONE_NAME)
    save_safetensors_atomic(state, Path(run_dir) / SAFETENSORS_NAME, arch_from_config(config))


def save_backbone(backbone: nn.Module, path: str | os.PathLike, arch: dict | None = None, *,
                  image_size: int | None = None, mean: Sequence[float] | None = None,
                  std: Sequence[float] | None = None) -> Path:
    """Write ``backbone``'s weights and architecture to ``path`` atomically, for `load_backbone` without flags.

    Args:
        backbone: the backbone (or a ``BarlowTwins`` model, whose ``backbone`` is saved).
        path: ``.safetensors`` (the architecture under ``ARCH_KEY`` in the metadata, no pickle) or any other
            name for a torch file ``{"state_dict": weights, "config": architecture}`` (``torch.load(path)
            ["state_dict"]`` loads into the torchvision model minus its classifier).
        arch: ``{"backbone": name, "stem": ..., "width": ...}`` (also ``image_size``, ``mean``, ``std``: what
            ``barlowtwins export`` reads); by default the ``arch`` that `create_backbone`
            and `load_backbone` put on the module. Without either, the file holds no architecture and
            `load_backbone` needs ``backbone=``/``stem=``/``width=`` to read it.
        image_size: the side in pixels of the images it was trained on, recorded so that ``barlowtwins knn``,
            ``linear``, ``export`` ... use it (without one they take 224 px and say so in a warning).
        mean: the per-channel mean of the normalisation it was trained with (3 numbers; default ImageNet's).
        std: the per-channel standard deviation of that normalisation (3 numbers; default ImageNet's).

    Returns the path written. Refuses non-finite weights (`CheckpointError`) and a malformed ``image_size``,
    ``mean`` or ``std`` (`ConfigError`).
    """
    net = backbone.backbone if isinstance(backbone, BarlowTwins) else backbone
    found = dict(arch if arch is not None else getattr(net, "arch", None) or {})
    for key, value in (("image_size", image_size), ("mean", mean), ("std", std)):
        if value is not None:
            found[key] = list(value) if isinstance(value, tuple) else value
            problem = field_problem(key, found[key])
            if problem:
                raise ConfigError(f"save_backbone: {key}={value!r}: {problem}")
    record = {k: v for k, v in arch_from_config(found).items() if v is not None}
    path = Path(path)
    state = backbone_state(net)
    if path.suffix == ".safetensors":
        save_safetensors_atomic(state, path, record)
    else:
        save_atomic({"state_dict": state, "config": record}, path)
    return path
