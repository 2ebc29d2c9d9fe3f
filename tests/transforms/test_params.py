"""Per-sample view parameters: a pure function of (seed, step, position, view) with the configured laws."""

import numpy as np
import pytest
import torch
from torchvision.transforms import RandomResizedCrop

from barlowtwins.transforms.params import (
    SampleView,
    counter_uniforms,
    crop_boxes,
    sample_uniforms,
    sample_views_from,
    view_params,
)
from barlowtwins.transforms.spec import NUM_UNIFORMS, augment_config


def test_uniforms_are_a_pure_function_of_the_key():
    u = counter_uniforms(3, 17, np.arange(64), view=0)
    assert u.shape == (64, NUM_UNIFORMS) and u.dtype == np.float64 and (u >= 0).all() and (u < 1).all()
    np.testing.assert_array_equal(u, counter_uniforms(3, 17, np.arange(64), view=0))
    np.testing.assert_array_equal(u[40:41], counter_uniforms(3, 17, [40], view=0))  # one sample alone: same row
    for other in (counter_uniforms(4, 17, np.arange(64), 0), counter_uniforms(3, 18, np.arange(64), 0),
                  counter_uniforms(3, 17, np.arange(64), 1), counter_uniforms(3, 17, np.arange(1, 65), 0)):
        assert not np.isclose(u, other).any()
    assert len(np.unique(u)) == u.size  # no repeats across positions or columns
    # Uniform enough: mean, variance and no correlation between neighbouring columns.
    big = counter_uniforms(0, 0, np.arange(20000), 0)
    assert abs(big.mean() - 0.5) < 0.01 and abs(big.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(big[:, 0], big[:, 1])[0, 1]) < 0.03


def test_parameters_differ_across_a_batch_and_follow_the_configured_probabilities():
    cfg = augment_config(224)
    n = 20000
    p0 = view_params(cfg, 0, seed=1, step=5, positions=np.arange(n), heights=375, widths=500)
    p1 = view_params(cfg, 1, seed=1, step=5, positions=np.arange(n), heights=375, widths=500)
    assert len(torch.unique(p0.box, dim=0)) > 0.9 * n  # different crops for different samples
    for p in (p0, p1):
        assert abs(p.flip.double().mean() - 0.5) < 0.02
        assert abs(p.jitter.double().mean() - 0.8) < 0.02
        assert abs(p.gray.double().mean() - 0.2) < 0.02
        for op in range(4):  # every op equally likely at every position of the jitter
            assert abs((p.order[:, 0] == op).double().mean() - 0.25) < 0.02
        assert torch.equal(p.order.sort(dim=1).values, torch.arange(4).expand(n, 4))  # permutations
        lo = torch.tensor([0.6, 0.6, 0.8, -0.1], dtype=torch.float64)
        hi = torch.tensor([1.4, 1.4, 1.2, 0.1], dtype=torch.float64)
        assert ((p.factors >= lo) & (p.factors <= hi)).all()
        assert ((p.sigma >= 0.1) & (p.sigma <= 2.0)).all()
    assert p0.blur.all() and abs(p1.blur.double().mean() - 0.1) < 0.01  # the asymmetric views
    assert not p0.solarize.any() and abs(p1.solarize.double().mean() - 0.2) < 0.02
    assert not torch.equal(p0.box, p1.box)


def test_crops_follow_torchvision_and_fit_images_of_any_size():
    cfg = augment_config(224)
    n = 4000
    h = np.random.default_rng(0).integers(20, 90, n)
    w = np.random.default_rng(1).integers(20, 90, n)
    p = view_params(cfg, 0, 0, 0, np.arange(n), h, w)
    top, left, bh, bw = p.box.unbind(1)
    ht, wt = torch.as_tensor(h, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= ht).all() and (left + bw <= wt).all()
    assert (bh >= 1).all() and (bw >= 1).all()
    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 60, 80), [0.08, 1.0], [3 / 4, 4 / 3])
                        for _ in range(n)], dtype=torch.float64)
    ours = view_params(cfg, 0, 0, 0, np.arange(n), 60, 80).box
    assert abs((ours[:, 2] * ours[:, 3]).mean() - (ref[:, 2] * ref[:, 3]).mean()) / (60 * 80) < 0.02
    assert abs(torch.log(ours[:, 3] / ours[:, 2]).mean() - torch.log(ref[:, 3] / ref[:, 2]).mean()) < 0.03


def test_fallback_box_per_sample():
    u = np.full((2, 10), 0.99)  # the largest areas and widest aspects: nothing fits a 4 x 200 or 200 x 4 image
    boxes = crop_boxes(u, u, np.zeros(2), np.zeros(2), [4, 200], [200, 4], (0.9, 1.0), (3 / 4, 4 / 3))
    # torchvision: too wide -> h = height, w = round(h * 4/3); too tall -> w = width, h = round(w / (3/4))
    assert boxes.tolist() == [[0, (200 - 5) // 2, 4, 5], [(200 - 5) // 2, 0, 5, 4]]


@pytest.mark.parametrize("world", [2, 4])
def test_a_rank_draws_its_slice_of_the_global_batch(world):
    cfg = augment_config(32)
    whole = view_params(cfg, 1, 0, 9, np.arange(8), 32, 32)
    n = 8 // world
    for r in range(world):
        part = view_params(cfg, 1, 0, 9, r * n + np.arange(n), 32, 32)
        assert torch.equal(part.box, whole.box[r * n: (r + 1) * n])
        assert torch.equal(part.factors, whole.factors[r * n: (r + 1) * n])


@pytest.mark.parametrize("size,overrides", [(224, {}), (64, {"crop_scale": (0.9, 1.0)}), (32, {"hue": 0.0}),
                                            (96, {"crop_ratio": (1.0, 1.0), "brightness": 0.0})])
def test_a_workers_scalar_parameters_equal_the_batched_ones(size, overrides):
    """`sample_views_from` (one sample, Python floats, what a loader worker calls per file) = `view_params` to
    the bit, on image sizes from tiny and extreme (fallback boxes) to large."""
    cfg = augment_config(size, **overrides)
    rng = np.random.default_rng(size)
    for _ in range(30):
        seed, step = (int(x) for x in rng.integers(0, 2**31, 2))
        positions = rng.integers(0, 2**31, 10)
        draws = sample_uniforms(cfg, seed, step, positions)
        for j, pos in enumerate(positions.tolist()):
            h, w = (int(x) for x in rng.choice([1, 3, 17, 224, 375, 500, 4000], 2))
            s0, s1 = sample_views_from(cfg, draws, j, h, w)
            for view, s in ((0, s0), (1, s1)):
                assert s == view_params(cfg, view, seed, step, [pos], h, w).sample(0), (seed, step, pos, h, w, view)
    assert isinstance(s0, SampleView) and set(s0) == set(view_params(cfg, 0, 0, 0, [0], 9, 9).values)
    assert isinstance(s0.box[0], float) and isinstance(s0.order[0], int) and isinstance(s0.flip, bool)


def test_uniforms_of_several_views_in_one_call():
    both = counter_uniforms(5, 9, np.arange(7), (0, 1))
    assert both.shape == (2, 7, NUM_UNIFORMS)
    np.testing.assert_array_equal(both[1], counter_uniforms(5, 9, np.arange(7), 1))
    np.testing.assert_array_equal(both[0], counter_uniforms(5, 9, np.arange(7), 0))


def test_parameters_of_some_ops_only():
    """The linear-evaluation crop draws only the crop and flip, from the same columns as the views."""
    from barlowtwins.transforms.params import params_from_uniforms

    cfg = augment_config(32)
    u = counter_uniforms(0, 1, np.arange(50), 0)
    some = params_from_uniforms(u, cfg, 0, 40, 48, ops=("crop", "flip"))
    every = params_from_uniforms(u, cfg, 0, 40, 48)
    assert set(some.values) == {"box", "flip"} and len(some) == 50
    assert torch.equal(some.box, every.box) and torch.equal(some.flip, every.flip)
    with pytest.raises(AttributeError, match="no view parameter 'sigma'"):
        some.sigma
