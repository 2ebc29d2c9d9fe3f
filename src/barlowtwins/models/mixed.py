"""The Mixed Barlow Twins regulariser (Bandara et al., 2023, arXiv 2312.02151; code: wgcban/mix-bt).

A third input mixes the two views of different images, ``x_m = α x1 + (1 - α) x2[π]`` (α ~ Beta(a, a), π a
permutation of the batch); if the embedding were linear in its input, the cross-correlation of the mixed
embedding with each view would be the same mix of the views' cross-correlations:

    C(m, 1) ≈ α C(1, 1) + (1 - α) C(2π, 1)          C(m, 2) ≈ α C(1, 2) + (1 - α) C(2π, 2)
    R = ||C(m, 1) - [α C(1, 1) + (1 - α) C(2π, 1)]||²_F + ||C(m, 2) - [α C(1, 2) + (1 - α) C(2π, 2)]||²_F

with every C as in the main loss (``C(a, b) = ẑ_aᵀ ẑ_b / N``, ẑ standardised per dimension over the global
batch). The training loss adds ``weight · λ · R`` (the reference code's ``mixup_loss_scale · λ``; it ramps the
weight up over the warm-up on ImageNet). The two bracketed differences share a factor, so each is one matmul:
``C(m, v) - [...] = Δᵀ ẑ_v / N`` with ``Δ = ẑ_m - α ẑ1 - (1 - α) ẑ2[π]``; the gradient flows through every term,
targets included, as in the reference code.

With ``distributed=True`` (the trainer's) the statistics and the two matrices are global over the ranks of
torch.distributed (one collective each; default ``False``: this process's batch, as `models.loss`), and π permutes
within each rank's samples (the inputs live there), so W ranks equal one process whose π permutes within the
same blocks (`training.mixing` draws π in blocks of the global batch).

    >>> xm = mix_inputs(x1, x2, perm, alpha)                       # (N, 3, H, W)
    >>> r = mixed_regulariser(z1, z2, model.embed(xm), perm, alpha)  # scalar R
"""

from __future__ import annotations

import torch

from barlowtwins.models.loss import standardise
from barlowtwins.runtime.distributed import all_reduce_sum, world_size


def mix_inputs(x1: torch.Tensor, x2: torch.Tensor, perm: torch.Tensor, alpha: float | torch.Tensor) -> torch.Tensor:
    """``α x1 + (1 - α) x2[perm]``: (N, ...) each, ``perm`` (N,) indices of this process's samples."""
    return torch.lerp(x2.index_select(0, perm), x1, alpha)


def mixed_regulariser(z1: torch.Tensor, z2: torch.Tensor, zm: torch.Tensor, perm: torch.Tensor,
                      alpha: float | torch.Tensor,
                      eps: float = 1e-5, distributed: bool | None = False) -> torch.Tensor:
    """R of the module docstring (unweighted) from the (N, D) embeddings of the two views and the mixed input;
    computed in float32 at least; global over the ranks with ``distributed=True`` (``None``: the same)."""
    distributed = bool(distributed or distributed is None) and world_size() > 1
    if not (z1.shape == z2.shape == zm.shape) or z1.ndim != 2:
        raise ValueError(f"Mixed Barlow Twins: expected three (N, D) tensors of one shape, got {tuple(z1.shape)}, "
                         f"{tuple(z2.shape)} and {tuple(zm.shape)}")
    with torch.autocast(device_type=z1.device.type, enabled=False):
        zs = [z.float() if z.dtype in (torch.float16, torch.bfloat16) else z for z in (z1, z2, zm)]
        (h1, h2, hm), n = standardise(zs, eps, distributed)
        delta = hm - alpha * h1 - (1 - alpha) * h2.index_select(0, perm)  # (N, D)
        d = torch.stack([delta.T @ h1, delta.T @ h2])  # (2, D, D): local sums over the batch
        if distributed:
            d = all_reduce_sum(d)
        return torch.linalg.vector_norm(d / n).square()


__all__ = ["mix_inputs", "mixed_regulariser"]
