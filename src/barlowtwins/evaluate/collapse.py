"""Collapse detection: the effective rank of a set of embeddings (Roy & Vetterli, 2007).

    erank(Z) = exp(H(p)),  p_i = s_i / sum_j s_j,  s = singular values of the centred (N, D) matrix Z

It is D for embeddings spread evenly over D directions and 1 for embeddings on a line; a Barlow Twins run whose
effective rank falls towards 1 has collapsed (the paper's "off-diagonal term only" ablation does).
"""

from __future__ import annotations

import torch


@torch.no_grad()
def effective_rank(z: torch.Tensor, eps: float = 1e-12) -> float:
    z = z.double()
    z = z - z.mean(dim=0, keepdim=True)
    s = torch.linalg.svdvals(z)
    if s.sum() <= eps:
        return 0.0
    p = s / s.sum()
    p = p[p > eps]
    return float(torch.exp(-(p * p.log()).sum()))


@torch.no_grad()
def embed(model, x_batches, device) -> torch.Tensor:
    """Projector outputs (N, D) of a `BarlowTwins` model in eval mode for an iterable of input batches."""
    was = model.training
    model.eval()
    out = torch.cat([model.embed(x.to(device)).float().cpu() for x in x_batches])
    model.train(was)
    return out
