"""RankMe and the centred effective rank: one spectral-entropy code path, checked against float64 references."""

import math

import numpy as np
import pytest
import torch

from barlowtwins.evaluate.collapse import effective_rank, rankme, singular_values, spectral_rank


def reference_rank(z: np.ndarray, centre: bool, eps: float) -> float:
    """exp(H(p)) in float64 numpy, written from the papers' definitions."""
    z = np.asarray(z, dtype=np.float64)
    if centre:
        z = z - z.mean(0, keepdims=True)
    s = np.linalg.svd(z, compute_uv=False)
    p = s / s.sum() + eps
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def test_both_ranks_match_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 12, generator=g) + 3.0  # an offset: centring matters
    assert rankme(z) == pytest.approx(reference_rank(z.numpy(), centre=False, eps=1e-7), rel=1e-9)
    assert effective_rank(z) == pytest.approx(reference_rank(z.numpy(), centre=True, eps=0.0), rel=1e-9)
    assert rankme(z) < effective_rank(z)  # the uncentred mean is one dominant direction
    # float32 input is computed in float64: the same as float64 input
    assert rankme(z) == pytest.approx(rankme(z.double()), rel=1e-12)
    assert singular_values(z).dtype == torch.float64


def test_rankme_edges():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 12, generator=g)
    q, _ = torch.linalg.qr(torch.randn(40, 8, generator=g, dtype=torch.float64))
    assert rankme(q) == pytest.approx(8, rel=1e-5)  # equal singular values: every direction used
    line = torch.randn(30, 1, generator=g) * torch.randn(1, 10, generator=g)
    assert rankme(line) == pytest.approx(1, abs=1e-3)  # collapsed onto a line
    assert rankme(z * 7.5) == pytest.approx(rankme(z), rel=1e-9)  # scale-free


def test_effective_rank_by_hand():
    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    # Centred data with k equal singular values has effective rank k.
    for k in (1, 3, 10):
        basis = q[:, :k] - q[:, :k].mean(0, keepdim=True)
        u, s, vh = torch.linalg.svd(basis, full_matrices=False)
        z = u @ vh  # equal singular values
        assert effective_rank(z) == pytest.approx(k, rel=1e-6)
    s = torch.tensor([3.0, 1.0])  # p = (0.75, 0.25): exp(H) = exp(-(0.75 ln 0.75 + 0.25 ln 0.25))
    z = torch.zeros(4, 2, dtype=torch.float64)
    z[0, 0], z[1, 0], z[2, 1], z[3, 1] = s[0] / 2 ** 0.5, -s[0] / 2 ** 0.5, s[1] / 2 ** 0.5, -s[1] / 2 ** 0.5
    assert effective_rank(z) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert effective_rank(torch.ones(5, 3)) == 0.0  # fully collapsed: every row the same
    assert spectral_rank(torch.tensor([2.0, 0.0, 0.0])) == pytest.approx(1.0)  # zero values add nothing
