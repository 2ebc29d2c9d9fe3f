"""One optimiser step of Barlow Twins on given views: the forward under autocast, the backward, LARS.

    >>> result = optimizer_step(model, optimizer, device, amp_dtype, x1, x2)   # result.loss, .on_diag, ...

The trainer's `train_step` sets the learning rate and makes the step's views (and Mixed Barlow Twins' draws, the
small crops) and calls this; ``barlowtwins bench`` times the same call on fixed views, so the step it measures is
the one that trains. No host sync.
"""

from __future__ import annotations

import torch
from torch import nn

from barlowtwins.runtime.hardware import autocast


def optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device,
                   amp_dtype: torch.dtype | None, x1: torch.Tensor, x2: torch.Tensor, **kwargs):
    """``model(x1, x2, return_parts=True, **kwargs)`` under autocast, then zero_grad, backward and step; the
    model's result (its loss and the parts of the loss)."""
    with autocast(device, amp_dtype):
        result = model(x1, x2, return_parts=True, **kwargs)
    optimizer.zero_grad(set_to_none=True)
    result.loss.backward()
    optimizer.step()
    return result


__all__ = ["optimizer_step"]
