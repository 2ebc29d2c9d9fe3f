"""The draws of a Mixed Barlow Twins step: pure functions of (seed, step) and the global batch positions, so a
resumed run and W ranks mix what one uninterrupted process mixes."""

import numpy as np
import pytest
import torch

from barlowtwins.training.mixing import mix_draw, mix_weight


def test_the_partner_permutation_permutes_within_each_block():
    perm, alpha = mix_draw(seed=0, step=12, rank=0, n_local=24, block=8, beta=1.0)
    assert perm.dtype == torch.int64 and perm.shape == (24,) and perm.device.type == "cpu"
    for lo in range(0, 24, 8):
        assert sorted(perm[lo: lo + 8].tolist()) == list(range(lo, lo + 8))
    assert not torch.equal(perm, torch.arange(24))  # it does mix
    assert isinstance(alpha, float) and 0.0 <= alpha <= 1.0


def test_the_same_seed_and_step_draw_the_same_and_another_step_another():
    a = mix_draw(3, 5, 0, 16, 16, 1.0)
    b = mix_draw(3, 5, 0, 16, 16, 1.0)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]  # a resumed run mixes the same partners
    c = mix_draw(3, 6, 0, 16, 16, 1.0)
    assert not torch.equal(a[0], c[0]) and a[1] != c[1]


def test_ranks_mix_what_one_process_mixes():
    """Two ranks of 8 with blocks of 8: each rank's permutation is the one process's for its half of the batch."""
    whole, alpha = mix_draw(seed=1, step=4, rank=0, n_local=16, block=8, beta=2.0)
    for rank in (0, 1):
        part, a = mix_draw(seed=1, step=4, rank=rank, n_local=8, block=8, beta=2.0)
        assert a == alpha
        assert torch.equal(part + 8 * rank, whole[8 * rank: 8 * rank + 8])


@pytest.mark.parametrize("block", [0, -1, 100])
def test_a_block_of_zero_or_above_the_batch_is_the_whole_batch(block):
    perm, _ = mix_draw(2, 3, 0, 10, block, 1.0)
    assert torch.equal(perm, mix_draw(2, 3, 0, 10, 10, 1.0)[0])
    assert sorted(perm.tolist()) == list(range(10))


def test_alpha_follows_its_beta_distribution():
    alphas = np.array([mix_draw(0, s, 0, 4, 4, 0.5)[1] for s in range(400)])
    assert ((alphas >= 0) & (alphas <= 1)).all()
    assert abs(alphas.mean() - 0.5) < 0.06  # Beta(a, a) is symmetric about 1/2
    # Beta(0.5, 0.5) piles up at the ends; Beta(8, 8) near the middle
    assert ((alphas < 0.1) | (alphas > 0.9)).mean() > 0.25
    narrow = np.array([mix_draw(0, s, 0, 4, 4, 8.0)[1] for s in range(400)])
    assert ((narrow < 0.1) | (narrow > 0.9)).mean() < 0.02


def test_the_weight_ramps_over_the_warm_up_then_stays():
    assert [mix_weight(2.0, s, 4) for s in range(7)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0, 2.0]
    assert mix_weight(2.0, 0, 0) == 2.0 and mix_weight(2.0, 3, -1) == 2.0  # no warm-up
