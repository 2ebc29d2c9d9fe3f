"""The Barlow Twins objective (Zbontar et al., 2021, eq. 1).

    C_ij = sum_b  ẑ1_bi ẑ2_bj / N           ẑ = z standardised per dimension over the (global) batch
    L    = sum_i (1 - C_ii)^2  +  λ sum_{i≠j} C_ij^2

Usable on its own:

    >>> loss_fn = BarlowTwinsLoss(lambd=0.0051)
    >>> loss = loss_fn(z1, z2)         # z1, z2: (N, D) projector outputs of the two views; a scalar tensor
    >>> loss.backward()
    >>> parts = loss_fn(z1, z2, return_parts=True)   # BarlowTwinsLossOutput(loss, on_diag, off_diag, c_block)

Across ranks only when asked: ``BarlowTwinsLoss(distributed=True)`` (the trainer's, and `build_model`'s default)
makes the batch statistics and C global under torch.distributed (summed over ranks with an autograd-aware
collective), so loss and gradients equal those of one process on the whole global batch; every rank must then call
it at the same step. The default, ``distributed=False``, keeps every computation on the calling process: a loss
computed on one rank only (an evaluation, a check on rank 0) never waits for the others.

Multi-crop (`transforms.multicrop`): with small crops z_3 .. z_{M+2}, the loss between the two full views stays
exactly the paper's, and the crops add, as SwAV and DINO do, a term between each small crop and each full view
(never between two small crops, which often share no content: a small crop learns to predict what the whole
image shows), averaged so that its scale does not grow with the crop count:

    L = L(1, 2) + w · (1 / M) Σ_k ½ [L(1, k) + L(2, k)]          every L the loss above, C global

    >>> parts = loss_fn(z1, z2, crops=[z3, z4], crop_weight=1.0, return_parts=True)   # parts.crops: the mean term
"""

from __future__ import annotations

from typing import NamedTuple, cast

import torch
from torch import nn

from barlowtwins.runtime.distributed import all_reduce_sum, world_size


class BarlowTwinsLossOutput(NamedTuple):
    loss: torch.Tensor  # scalar: on_diag + lambd * off_diag
    on_diag: torch.Tensor  # scalar: sum_i (1 - C_ii)^2
    off_diag: torch.Tensor  # scalar: sum_{i != j} C_ij^2 (before λ)
    # (k, k) detached copy of the top-left block C[:k, :k] (global under torch.distributed, as C is), when the
    # loss was asked for one (``c_block=k``); None otherwise. A cheap window on C for run reports.
    c_block: torch.Tensor | None = None
    # scalar: the Mixed Barlow Twins regulariser R (before its weight; ``loss`` includes weight * λ * R) when the
    # step mixed inputs (`models.mixed`); None otherwise
    mix: torch.Tensor | None = None
    # scalar: multi-crop's term (1/M) Σ_k ½ [L(1, k) + L(2, k)] (before its weight; ``loss`` includes weight times
    # it) when the step had small crops; None otherwise
    crops: torch.Tensor | None = None


def standardise(zs: list[torch.Tensor], eps: float, distributed: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Per-dimension (z - mean) / sqrt(var + eps) of each (N_local, D) tensor over the global batch, biased
    variance (as BatchNorm), with one collective for all the means and the count and one for the variances.

    Returns the standardised tensors and the global batch size as a 0-d tensor (kept on device: no host sync).
    """
    n_local, d = zs[0].shape[0], zs[0].shape[1]
    # (k D + 1,): every mean and the count in one collective
    stats = torch.cat([z.sum(0) for z in zs] + [zs[0].new_full((1,), float(n_local))])
    if distributed:
        stats = all_reduce_sum(stats)
    n = stats[-1]
    centred = [z - stats[i * d: (i + 1) * d] / n for i, z in enumerate(zs)]
    # Two-pass variance: more accurate than E[z^2] - E[z]^2 when the mean is large.
    sq = torch.cat([c.square().sum(0) for c in centred])
    if distributed:
        sq = all_reduce_sum(sq)
    return [c * torch.rsqrt(sq[i * d: (i + 1) * d] / n + eps) for i, c in enumerate(centred)], n


def _standardise(z1: torch.Tensor, z2: torch.Tensor, eps: float, distributed: bool):
    """`standardise` of the two views: ẑ1, ẑ2 (N_local, D) and the global batch size (0-d tensor)."""
    (z1n, z2n), n = standardise([z1, z2], eps, distributed)
    return z1n, z2n, n


def _across_ranks(distributed: bool | None) -> bool:
    """Whether to sum over ranks: ``True`` when a process group of more than one rank exists; ``None`` is the same
    (the old automatic setting, kept for callers that pass it); ``False`` never."""
    return bool(distributed or distributed is None) and world_size() > 1


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5,
                      distributed: bool | None = False) -> torch.Tensor:
    """The D x D cross-correlation matrix C of two (N, D) batches; global over the ranks of torch.distributed with
    ``distributed=True`` (default: this process's batch only)."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"Barlow Twins loss: expected two (N, D) tensors of the same shape, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    distributed = _across_ranks(distributed)
    z1n, z2n, n = _standardise(z1, z2, eps, distributed)
    c = z1n.T @ z2n  # (D, D): local sum over the batch
    if distributed:
        c = all_reduce_sum(c)
    return c / n


TERMS = ("both", "on-diagonal", "off-diagonal")


def _terms(c: torch.Tensor, lambd: float, terms: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss, on-diagonal, off-diagonal) of a cross-correlation matrix C (D, D)."""
    diag = torch.diagonal(c)
    on_diag = (1.0 - diag).square().sum()
    # Sum of squares of the off-diagonal entries without a masked D x D copy: ||C||_F^2 - ||diag C||^2.
    # vector_norm reduces C in place (no D x D temporary for C**2).
    off_diag = torch.linalg.vector_norm(c).square() - diag.square().sum()
    if terms == "both":
        loss = on_diag + lambd * off_diag
    elif terms == "on-diagonal":
        loss = on_diag
    elif terms == "off-diagonal":
        loss = lambd * off_diag
    else:
        raise ValueError(f"Barlow Twins loss: unknown terms '{terms}'; choose one of {', '.join(TERMS)}")
    return loss, on_diag, off_diag


def _correlation(a: torch.Tensor, b: torch.Tensor, n: torch.Tensor, distributed: bool) -> torch.Tensor:
    """C = âᵀ b̂ / N of two standardised (N_local, D) batches, summed over ranks."""
    c = a.T @ b  # (D, D): local sum over the batch
    if distributed:
        c = all_reduce_sum(c)
    return c / n


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 0.0051, eps: float = 1e-5,
                      distributed: bool | None = False, terms: str = "both",
                      c_block: int = 0, crops=(), crop_weight: float | torch.Tensor = 1.0) -> BarlowTwinsLossOutput:
    """Functional form of :class:`BarlowTwinsLoss` that returns all the parts (``.loss`` is the scalar to
    minimise); computed in float32 at least (autocast is turned off).

    ``c_block=k`` also returns C[:k, :k] (detached, on C's device): a slice of the matrix the loss builds anyway,
    so it costs one k x k copy and no extra collective. ``crops``: multi-crop's small-crop embeddings, (N, D)
    each: ``loss`` adds ``crop_weight`` times their term (the module docstring), returned as ``crops``.
    ``distributed=True``: statistics and C summed over the ranks of torch.distributed (every rank must call it);
    ``False`` (default): this process's batch only."""
    distributed = _across_ranks(distributed)
    if z1.ndim != 2 or z1.shape != z2.shape or any(z.shape != z1.shape for z in crops):
        raise ValueError(f"Barlow Twins loss: expected (N, D) tensors of the same shape, got "
                         f"{[tuple(z.shape) for z in (z1, z2, *crops)]}")
    if not distributed and z1.shape[0] < 2:
        raise ValueError(f"Barlow Twins loss: batch size {z1.shape[0]} is too small; the per-dimension "
                         "standardisation needs at least 2 samples (use --batch-size 2 or more)")
    if terms not in TERMS:
        raise ValueError(f"Barlow Twins loss: unknown terms '{terms}'; choose one of {', '.join(TERMS)}")
    device_type = z1.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        # Half precision in, float32 math (float64 stays float64, for gradient checks).
        zs = [z.float() if z.dtype in (torch.float16, torch.bfloat16) else z for z in (z1, z2, *crops)]
        zs = [z.to(zs[0].dtype) for z in zs]
        (h1, h2, *hc), n = standardise(zs, eps, distributed)  # each tensor by itself: the two views as ever
        c = _correlation(h1, h2, n, distributed)
        loss, on_diag, off_diag = _terms(c, lambd, terms)
        block = c[:c_block, :c_block].detach().clone() if c_block > 0 else None
        crop_term = None
        if hc:
            # (1/M) Σ_k ½ [L(1, k) + L(2, k)]: one C (and one collective) at a time, D x D each
            # a tensor: hc is not empty (typeshed's sum starts at int 0, so it reads as Tensor | float)
            crop_term = cast(torch.Tensor, sum(_terms(_correlation(h, hk, n, distributed), lambd, terms)[0]
                                               for hk in hc for h in (h1, h2)) / (2 * len(hc)))
            loss = loss + crop_weight * crop_term
    return BarlowTwinsLossOutput(loss, on_diag, off_diag, block, crops=crop_term)


class BarlowTwinsLoss(nn.Module):
    """Barlow Twins redundancy-reduction loss.

    Args:
        lambd: weight of the off-diagonal (redundancy) term; the paper uses 0.0051.
        eps: added to the per-dimension variance before the square root (BatchNorm's default, as the
            official code standardises with an affine-free ``BatchNorm1d``).
        distributed: ``True`` sums the batch statistics and C over the ranks of torch.distributed when a
            process group of more than one rank is initialised (the global batch, as the paper; every rank must
            call the loss at the same step: the trainer and `build_model` turn it on); ``False`` (default) keeps
            them to this process's batch, so a loss computed on one rank alone never waits for the others.
            (``None``, the former default, is taken as ``True``.)
        terms: ``both`` (the paper); ``on-diagonal`` or ``off-diagonal`` keep one term (Table 5 ablations).
        c_block: when > 0, the parts (``return_parts=True``) also carry ``c_block``: the detached top-left
            (k, k) block of C, for run reports. A compiled module sees the value it had at tracing.

    ``forward(z1, z2)`` takes two (N, D) embeddings and returns the scalar loss, ready for ``backward()``;
    ``forward(z1, z2, return_parts=True)`` returns ``BarlowTwinsLossOutput(loss, on_diag, off_diag, c_block)``;
    ``crops=[z3, ...]`` adds multi-crop's small-crop term, times ``crop_weight`` (the module docstring).
    """

    def __init__(self, lambd: float = 0.0051, eps: float = 1e-5, distributed: bool | None = False,
                 terms: str = "both", c_block: int = 0):
        super().__init__()
        if lambd < 0:
            raise ValueError(f"Barlow Twins loss: lambd must be >= 0, got {lambd}")
        if terms not in TERMS:
            raise ValueError(f"Barlow Twins loss: unknown terms '{terms}'; choose one of {', '.join(TERMS)}")
        if c_block < 0:
            raise ValueError(f"Barlow Twins loss: c_block must be >= 0, got {c_block}")
        self.lambd = float(lambd)
        self.eps = float(eps)
        self.distributed = distributed
        self.terms = terms
        self.c_block = int(c_block)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor, *, return_parts: bool = False, crops=(),
                crop_weight: float | torch.Tensor = 1.0) -> torch.Tensor | BarlowTwinsLossOutput:
        out = barlow_twins_loss(z1, z2, self.lambd, self.eps, self.distributed, self.terms,
                                self.c_block if return_parts else 0, crops=crops or (), crop_weight=crop_weight)
        return out if return_parts else out.loss

    def extra_repr(self) -> str:
        return (f"lambd={self.lambd}, eps={self.eps}, terms={self.terms}, c_block={self.c_block}, "
                f"distributed={self.distributed}")
