"""The draws of a Mixed Barlow Twins step (`models.mixed`): the partner permutation and the mixing weight.

Both are pure functions of (seed, step) and the samples' positions in the global batch, like the views, so a
resumed run mixes what the uninterrupted run mixes, and W ranks mix what one process mixes: π permutes within
blocks of ``block`` consecutive positions of the global batch (the images a block holds live on one rank when
the per-rank batch is a multiple of the block), each block by the order of one counter-based uniform per
position; α ~ Beta(a, a) from a generator seeded by (seed, step).

    >>> perm, alpha = mix_draw(seed=0, step=12, rank=0, n_local=256, block=64, beta=1.0)
    >>> perm.shape, 0 <= alpha <= 1                                   # (torch.Size([256]), True)
"""

from __future__ import annotations

import numpy as np
import torch

from barlowtwins.transforms.params import counter_uniforms

MIX_STREAM = 1000  # the counter stream of the partner draws (views use 0, 1, ...)
_ALPHA_TAG = 0x4D4958  # "MIX": the alpha generator's third seed word


def mix_draw(seed: int, step: int, rank: int, n_local: int, block: int, beta: float) -> tuple[torch.Tensor, float]:
    """(perm, alpha) for this rank's ``n_local`` samples of ``step``: ``perm`` (n_local,) int64 indices into
    them (CPU), ``alpha`` a Python float in [0, 1]. ``block`` <= 0 or above ``n_local`` means this rank's
    whole batch."""
    block = n_local if block <= 0 or block > n_local else block
    start = rank * n_local
    u = counter_uniforms(seed, step, np.arange(start, start + n_local), MIX_STREAM, k=1)[:, 0]
    perm = np.empty(n_local, dtype=np.int64)
    for lo in range(0, n_local, block):  # blocks aligned to the rank's first position
        hi = min(lo + block, n_local)
        perm[lo:hi] = lo + np.argsort(u[lo:hi], kind="stable")
    alpha = float(np.random.default_rng([seed, step, _ALPHA_TAG]).beta(beta, beta))
    return torch.from_numpy(perm), alpha


def mix_weight(weight: float, step: int, warmup_steps: int) -> float:
    """The regulariser's weight at ``step``: ramped linearly from 0 over the warm-up (the reference ImageNet
    code's schedule), then constant."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return weight
    return weight * step / warmup_steps


__all__ = ["MIX_STREAM", "mix_draw", "mix_weight"]
