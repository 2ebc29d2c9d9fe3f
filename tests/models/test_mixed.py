"""The Mixed Barlow Twins regulariser against a float64 transcription of the reference code's formula, its
gradient, edge cases, and the model's third pass; the draws of a step (`training.mixing`)."""

import numpy as np
import pytest
import torch

from barlowtwins.models.barlow_twins import build_model
from barlowtwins.models.mixed import mix_inputs, mixed_regulariser
from barlowtwins.training.mixing import mix_draw, mix_weight


def reference(z1, z2, zm, perm, alpha, eps=1e-5):
    """The formula as the reference code writes it (four cross-correlations and their targets), float64."""
    def std(z):
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)

    n = z1.shape[0]
    a, b, m = std(z1), std(z2), std(zm)
    c_m1 = m.T @ a / n
    gt_1 = alpha * (a.T @ a) / n + (1 - alpha) * (b[perm].T @ a) / n
    c_m2 = m.T @ b / n
    gt_2 = alpha * (a.T @ b) / n + (1 - alpha) * (b[perm].T @ b) / n
    return ((c_m1 - gt_1) ** 2).sum() + ((c_m2 - gt_2) ** 2).sum()


def embeddings(n=12, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64) * 3 + 1
    z2 = z1 + torch.randn(n, d, generator=g, dtype=torch.float64)
    zm = torch.randn(n, d, generator=g, dtype=torch.float64)
    return z1, z2, zm, torch.randperm(n, generator=g)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_equals_the_reference_formula(alpha):
    z1, z2, zm, perm = embeddings()
    got = mixed_regulariser(z1, z2, zm, perm, alpha, distributed=False)
    assert got.dtype == torch.float64
    assert float(got) == pytest.approx(float(reference(z1, z2, zm, perm, alpha)), rel=1e-10)


def test_zero_when_the_mixed_embedding_is_the_mix_of_identical_views():
    z1, _, _, _ = embeddings()
    ident = torch.arange(z1.shape[0])
    assert float(mixed_regulariser(z1, z1, z1, ident, 0.4, distributed=False)) == pytest.approx(0, abs=1e-20)
    assert float(mixed_regulariser(*embeddings()[:3], embeddings()[3], 0.4, distributed=False)) > 0


def test_gradient_is_the_reference_gradient():
    z1, z2, zm, perm = (t.requires_grad_() if t.is_floating_point() else t for t in embeddings(n=6, d=3))
    torch.autograd.gradcheck(lambda a, b, c: mixed_regulariser(a, b, c, perm, 0.3, distributed=False),
                             (z1, z2, zm))
    ours = torch.autograd.grad(mixed_regulariser(z1, z2, zm, perm, 0.3, distributed=False), (z1, z2, zm))
    ref = torch.autograd.grad(reference(z1, z2, zm, perm, 0.3), (z1, z2, zm))
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_half_precision_inputs_are_computed_in_float32():
    z1, z2, zm, perm = embeddings()
    out = mixed_regulariser(z1.bfloat16(), z2.bfloat16(), zm.bfloat16(), perm, 0.5, distributed=False)
    assert out.dtype == torch.float32


def test_shape_mismatch_is_one_clear_error():
    z1, z2, zm, perm = embeddings()
    with pytest.raises(ValueError, match="three \\(N, D\\) tensors"):
        mixed_regulariser(z1, z2, zm[:, :3], perm, 0.5, distributed=False)


def test_mix_inputs():
    x1, x2 = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    perm = torch.tensor([2, 0, 3, 1])
    assert torch.allclose(mix_inputs(x1, x2, perm, 0.25), 0.25 * x1 + 0.75 * x2[perm], atol=1e-6)


def test_model_adds_weight_times_lambda_times_r_in_a_third_pass():
    torch.manual_seed(0)
    model = build_model("resnet18", "16-16", stem="small", width=4, lambd=0.01).double()
    x1, x2 = torch.randn(6, 3, 16, 16, dtype=torch.float64), torch.randn(6, 3, 16, 16, dtype=torch.float64)
    perm, alpha = torch.tensor([1, 0, 3, 2, 5, 4]), 0.3
    plain = model(x1, x2, return_parts=True)
    mixed = model(x1, x2, return_parts=True, mix=(perm, alpha, 4.0))
    z1, z2 = model.embed(x1), model.embed(x2)
    r = mixed_regulariser(z1, z2, model.embed(alpha * x1 + (1 - alpha) * x2[perm]), perm, alpha, distributed=False)
    assert float(mixed.mix) == pytest.approx(float(r), rel=1e-9)
    assert float(mixed.loss) == pytest.approx(float(plain.loss + 4.0 * 0.01 * r), rel=1e-9)
    assert plain.mix is None
    assert float(model(x1, x2, mix=(perm, alpha, 4.0))) == pytest.approx(float(mixed.loss), rel=1e-9)


def test_draws_are_a_function_of_seed_and_step_and_permute_within_blocks():
    perm, alpha = mix_draw(3, 7, 0, 16, 4, 1.0)
    again, alpha2 = mix_draw(3, 7, 0, 16, 4, 1.0)
    assert torch.equal(perm, again) and alpha == alpha2 and 0 <= alpha <= 1
    assert perm.dtype == torch.int64
    for lo in range(0, 16, 4):  # a permutation of each block
        assert sorted(perm[lo: lo + 4].tolist()) == list(range(lo, lo + 4))
    other, alpha3 = mix_draw(3, 8, 0, 16, 4, 1.0)
    assert alpha3 != alpha
    assert not torch.equal(mix_draw(4, 7, 0, 16, 4, 1.0)[0], perm) or not torch.equal(other, perm)


def test_ranks_draw_the_blocks_one_process_draws():
    one, a = mix_draw(0, 5, 0, 16, 4, 2.0)
    parts = [mix_draw(0, 5, r, 8, 4, 2.0) for r in range(2)]
    assert all(alpha == a for _, alpha in parts)
    assert torch.equal(torch.cat([p + 8 * r for r, (p, _) in enumerate(parts)]), one)


def test_block_larger_than_the_batch_is_the_whole_batch():
    perm, _ = mix_draw(0, 0, 0, 5, 64, 1.0)
    assert sorted(perm.tolist()) == list(range(5))


def test_beta_parameter_shapes_the_mixing_weight():
    small = [mix_draw(0, s, 0, 4, 4, 0.1)[1] for s in range(300)]
    large = [mix_draw(0, s, 0, 4, 4, 20.0)[1] for s in range(300)]
    assert np.mean([min(a, 1 - a) for a in small]) < 0.1  # Beta(0.1, 0.1): mostly near 0 or 1
    assert abs(np.mean(large) - 0.5) < 0.03 and np.std(large) < 0.12  # Beta(20, 20): near 1/2


def test_weight_ramps_over_the_warmup():
    assert mix_weight(4.0, 0, 10) == 0 and mix_weight(4.0, 5, 10) == 2.0
    assert mix_weight(4.0, 10, 10) == 4.0 and mix_weight(4.0, 99, 10) == 4.0 and mix_weight(4.0, 0, 0) == 4.0
