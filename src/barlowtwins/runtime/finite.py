"""The one finiteness check: nothing non-finite is saved, exported or loaded for evaluation."""

from __future__ import annotations

from collections.abc import Iterable

import torch


def nonfinite_names(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an Inf, in the order given (one host sync for all of
    them); non-tensor values, integer and empty tensors are skipped."""
    named = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel()]
    if not named:
        return []
    # (T,) one flag per tensor, computed on each tensor's device and gathered on the CPU in one transfer.
    flags = torch.stack([torch.isfinite(t.detach()).all().cpu() for _, t in named])
    return [n for (n, _), ok in zip(named, flags.tolist()) if not ok]
