"""Collapse detection: the effective rank of a set of embeddings, as an entropy of its singular values.

    rank(Z) = exp(H(p)),  H(p) = -sum_i p_i log p_i,  p = s / sum_j s_j,  s = singular values of the (N, D) Z

It is D for embeddings spread evenly over D directions and 1 for embeddings on a line; a Barlow Twins run whose
effective rank falls towards 1 has collapsed (the paper's "off-diagonal term only" ablation does). Two variants,
computed by the same code:

* `effective_rank` (Roy & Vetterli, 2007): of the centred Z;
* `rankme` (Garrido et al., 2023): of Z as it is (uncentred), with ``p_i + eps``, as the paper defines it.

Both work in float64: an SVD in float32 of a near-collapsed matrix loses the small singular values that decide
the entropy.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def singular_values(z: torch.Tensor, centre: bool = True) -> torch.Tensor:
    """The singular values (min(N, D),), descending, in float64, of ``z`` (N, D), centred over N by default."""
    z = z.detach().double()
    if centre:
        z = z - z.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(z)


def spectral_rank(s: torch.Tensor, eps: float = 0.0) -> float:
    """exp of the entropy of the normalised singular values ``s``, each raised by ``eps``; 0 when they sum to
    (numerically) nothing: every row the same, for the centred rank."""
    s = s.double()
    total = s.sum()
    if total <= 1e-12:
        return 0.0
    p = s / total + eps
    return float(torch.exp(-torch.special.xlogy(p, p).sum()))  # xlogy: 0 log 0 = 0, no NaN for zero values


def effective_rank(z: torch.Tensor) -> float:
    """The centred effective rank of Roy & Vetterli (2007) of ``z`` (N, D)."""
    return spectral_rank(singular_values(z, centre=True))


def rankme(z: torch.Tensor, eps: float = 1e-7) -> float:
    """RankMe (Garrido et al., 2023) of ``z`` (N, D): the uncentred matrix, ``p_i + eps``."""
    return spectral_rank(singular_values(z, centre=False), eps)
