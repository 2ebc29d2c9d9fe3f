"""Multi-crop's small crops: their config, their draws as a pure function of (seed, step, position, crop), on every
data path (in memory, cpu workers, device ops on CPU tensors), for ranks, resumes and loader workers."""

import numpy as np
import pytest
import torch
from conftest import epoch_views, make_image_folder, says_both

from barlowtwins.data.datasets import build_dataset, load_fashion_mnist
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.errors import ConfigError
from barlowtwins.transforms.multicrop import (
    MIN_SIZE,
    MultiCrop,
    check_multicrop,
    default_scale,
    default_size,
    multicrop_from,
)
from barlowtwins.transforms.params import SampleView, counter_uniforms, sample_uniforms, sample_views_from, view_params
from barlowtwins.transforms.pil import draft_size
from barlowtwins.transforms.spec import augment_config, blur_kernel_for

CPU = torch.device("cpu")
MC = MultiCrop(count=3, size=12, scale=(0.1, 0.4))


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "imgs", per_class=8, size=40, splits=("train",))  # 16 files, JPEG + PNG


def aug(size=24, **kw):
    return augment_config(size, **kw)


def test_the_small_crops_config_changes_size_scale_and_the_derived_blur_only():
    full = aug(96)
    small = MC.config(full)
    assert small.image_size == 12 and small.crop_scale == (0.1, 0.4)
    assert small.blur_kernel == blur_kernel_for(12) != full.blur_kernel
    same = {f: getattr(full, f) for f in ("jitter_p", "brightness", "hue", "grayscale_p", "blur_p", "solarize_p",
                                          "mean", "std", "interpolation", "crop_ratio")}
    assert all(getattr(small, f) == v for f, v in same.items())
    assert MC.config(aug(96, blur_kernel=11)).blur_kernel == 11  # a kernel the user set is kept
    assert MultiCrop(2, 64, (0.1, 0.2)).config(aug(24)).image_size == 24  # never larger than the full views


def test_defaults_follow_swav_and_off_is_none():
    assert default_size(224) == 96 and default_size(28) == 12 and default_size(32) == 12
    assert default_scale(224) == (0.05, 0.14) and default_scale(28) == (0.14, 0.5)
    assert multicrop_from(0, 0, None, 224) is None
    assert multicrop_from(6, 0, None, 224) == MultiCrop(6, 96, (0.05, 0.14))
    assert multicrop_from(2, 40, [0.2, 0.3], 224) == MultiCrop(2, 40, (0.2, 0.3))


@pytest.mark.parametrize("bad", [dict(count=0), dict(size=0), dict(scale=(0.5, 0.2)), dict(scale=(0.0, 0.5)),
                                 dict(scale=(0.1, 1.5))])
def test_bad_settings_are_refused(bad):
    with pytest.raises(ValueError, match="multi-crop"):
        MultiCrop(**{**dict(count=2, size=12, scale=(0.1, 0.4)), **bad})


def test_small_crops_below_the_minimum_or_not_smaller_than_the_views_are_refused():
    for count, size, image_size, message in [
        (2, 64, 32, "--multicrop-size 64 is not smaller than --image-size 32: the small crops are low-resolution "
                    "views of a part of the image; use 8 to 31, or 0 for 3/7 of --image-size"),
        (2, 32, 32, "--multicrop-size 32 is not smaller than --image-size 32"),  # equal: no smaller crops at all
        (2, 1, 32, "--multicrop-size 1 is below 8 px, too small for the network's strides; use 8 to 31"),
        (6, 7, 224, "--multicrop-size 7 is below 8 px"),
        (2, 0, 12, "default --multicrop-size at --image-size 12 is 4 px (3/7 of it), below 8 px; set "
                   "--multicrop-size 8 to 11"),
        (2, 0, 8, "--multicrop-count 2 needs --image-size above 8"),
    ]:
        with pytest.raises(ConfigError) as e:
            check_multicrop(count, size, image_size)
        says_both(e.value, message)
    for count, size, image_size in [(0, 64, 32), (0, 1, 32), (2, 0, 32), (2, MIN_SIZE, 32), (2, 31, 32), (6, 0, 224),
                                    (2, 0, 14)]:
        check_multicrop(count, size, image_size)  # count 0: multi-crop off, its size unused


def test_crop_k_draws_its_own_stream_with_the_settings_of_view_k_mod_2():
    full = aug(64)
    small = MC.config(full)
    pos = np.arange(32)
    for k in range(MC.count):
        p = MC.params(full, k, seed=4, step=9, positions=pos, heights=80, widths=100)
        u = counter_uniforms(4, 9, pos, 2 + k, k=full.spec.num_uniforms)
        # the same numbers as view_params of stream 2 + k, the per-view probabilities of view k % 2
        ref = view_params(small, k % 2, 4, 9, pos, 80, 100, stream=2 + k)
        assert all(torch.equal(getattr(p, name), getattr(ref, name)) for name in ref.values)
        assert torch.equal(p.blur, torch.from_numpy(u[:, full.spec.columns["blur"]["apply"].start] <
                                                    full.blur_p[k % 2]))
    p0, p1 = (MC.params(full, k, 4, 9, pos, 80, 100) for k in (0, 1))
    v0 = view_params(full, 0, 4, 9, pos, 80, 100)
    assert not torch.equal(p0.box, p1.box) and not torch.equal(p0.flip, v0.flip)  # streams are independent
    areas = (p0.box[:, 2] * p0.box[:, 3]) / (80 * 100)
    assert float(areas.min()) >= 0.1 - 0.02 and float(areas.max()) <= 0.4 + 0.02  # the small crops' scale


def test_the_workers_per_sample_draws_equal_the_batched_ones_to_the_bit():
    full = aug(64)
    small = MC.config(full)
    pos = [5, 6, 7, 40]
    draws = sample_uniforms(small, 3, 11, pos, *MC.streams())
    for j, position in enumerate(pos):
        per_sample = sample_views_from(small, draws, j, 70, 90)
        assert len(per_sample) == MC.count
        for k, s in enumerate(per_sample):
            batched = MC.params(full, k, 3, 11, [position], 70, 90).sample(0)
            assert s == batched


def test_the_draft_decode_keeps_the_resolution_the_small_crops_need():
    big = SampleView(box=(0.0, 0.0, 800.0, 800.0))  # a full view: 800 px -> 64 px, could decode at 1/8
    small = SampleView(box=(0.0, 0.0, 100.0, 100.0))  # a small crop: 100 px -> 32 px needs more than 1/4
    assert draft_size(800, 800, [big, big], 64) == (64, 64)
    assert draft_size(800, 800, [big, big, small], [64, 64, 32]) == (256, 256)
    with pytest.raises(ValueError):
        draft_size(800, 800, [big, big, small], [64, 64])


def dataset_for(kind, folder, fmnist_dir):
    return load_fashion_mnist(fmnist_dir) if kind == "memory" else build_dataset("folder", folder, "train")


def all_views(pipe, epoch, start=0):
    return epoch_views(pipe, epoch, start, every_view=True)


@pytest.mark.parametrize("kind", ["cpu", "device", "memory"])
def test_every_path_makes_the_small_crops_for_ranks_and_resumes(kind, folder, fmnist_dir):
    """Two full views, then the small crops: normalised, of their size; 2 ranks draw one process's crops; a resume
    at batch 1 draws the uninterrupted crops; ``views`` still gives the two full views."""
    ds = dataset_for(kind, folder, fmnist_dir)
    path = kind if kind != "memory" else "auto"
    one = build_pipeline(ds, aug(24), batch_size=8, seed=3, device=CPU, data_path=path, workers=0, multicrop=MC)
    ranks = [build_pipeline(ds, aug(24), batch_size=4, seed=3, rank=r, world=2, device=CPU, data_path=path,
                            workers=0, multicrop=MC) for r in range(2)]
    assert one.num_views == 5
    whole = all_views(one, 1)
    parts = [all_views(p, 1) for p in ranks]
    for b, (idx, views) in enumerate(whole):
        assert len(views) == 5
        assert [tuple(v.shape) for v in views] == [(8, 3, 24, 24)] * 2 + [(8, 3, 12, 12)] * 3
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in views)
        assert parts[0][b][0] + parts[1][b][0] == idx
        for k, v in enumerate(views):
            torch.testing.assert_close(torch.cat([parts[0][b][1][k], parts[1][b][1][k]]), v, atol=1e-5, rtol=0)
    for k in range(2, 5):  # the crops differ from each other
        assert not torch.equal(whole[0][1][k], whole[0][1][2 if k != 2 else 3])
    resumed = all_views(one, 1, start=1)
    for (i_a, a), (i_b, b) in zip(whole[1:], resumed):
        assert i_a == i_b and all(torch.equal(x, y) for x, y in zip(a, b))
    batch, _, _ = next(iter(one.epoch(1)))
    two = one.views(batch, len(one))
    assert len(two) == 2 and all(torch.equal(x, y) for x, y in zip(two, whole[0][1][:2]))
    # the full views are those of a run without multi-crop (the small crops draw other streams)
    plain = build_pipeline(ds, aug(24), batch_size=8, seed=3, device=CPU, data_path=path, workers=0)
    pb, _, _ = next(iter(plain.epoch(1)))
    assert all(torch.equal(x, y) for x, y in zip(plain.all_views(pb, len(plain)), whole[0][1][:2]))


def test_cpu_and_device_paths_make_the_same_small_crops(folder):
    ds = build_dataset("folder", folder, "train")
    cfg = aug(24, jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))
    out = {kind: all_views(build_pipeline(ds, cfg, batch_size=8, seed=1, device=CPU, data_path=kind, workers=0,
                                          multicrop=MC), 0) for kind in ("cpu", "device")}
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    for (_, c), (_, d) in zip(out["cpu"], out["device"]):
        for x, y in zip(c[2:], d[2:]):
            diff = ((x - y) * std).abs()  # in [0, 1] pixel units
            assert float(diff.mean()) < 0.02 and float(diff.quantile(0.99)) < 0.12


def test_loader_workers_make_the_crops_the_main_process_makes(folder):
    ds = build_dataset("folder", folder, "train")
    a = all_views(build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0,
                                 multicrop=MC), 0)
    b = all_views(build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=2,
                                 multicrop=MC), 0)
    for (ia, va), (ib, vb) in zip(a, b):
        assert ia == ib and all(torch.equal(x, y) for x, y in zip(va, vb))


def test_the_cpu_path_counts_the_small_crops_in_its_batch_bytes(folder):
    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(24), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0, multicrop=MC)
    assert pipe.batch_bytes() == 8 * (2 * 24 ** 2 + 3 * 12 ** 2) * 3


@pytest.mark.parametrize("kind", ["cpu", "memory"])
def test_with_progressive_resolution_the_crops_keep_their_size_unless_the_views_are_smaller(kind, folder,
                                                                                           fmnist_dir):
    ds = dataset_for(kind, folder, fmnist_dir)
    path = kind if kind != "memory" else "auto"
    mc = MultiCrop(2, 20, (0.2, 0.5))
    pipe = build_pipeline(ds, aug(24), batch_size=4, seed=2, device=CPU, data_path=path, workers=0,
                          progressive=(16, 2), multicrop=mc)
    batch, _, _ = next(iter(pipe.epoch(0)))
    assert [v.shape[-1] for v in pipe.all_views(batch, 0)] == [16, 16, 16, 16]
    late, _, _ = next(iter(pipe.epoch(2)))
    assert [v.shape[-1] for v in pipe.all_views(late, 2 * len(pipe))] == [24, 24, 20, 20]
