"""Batched views against torchvision's functional ops, the crop sampler against torchvision's, and the factory."""

import math

import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from barlowtwins.transforms.spec import augment_config
from barlowtwins.transforms.tensor import (
    BatchViews,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    grayscale,
    resized_crop,
    sample_crop_boxes,
    solarize,
)
from barlowtwins.transforms.two_view import TwoViewTransform


@pytest.fixture
def images():
    return torch.rand(6, 3, 20, 24, generator=torch.Generator().manual_seed(0))


def per_image(fn, images, factors):
    return torch.stack([fn(img, float(f)) for img, f in zip(images, factors)])


def test_brightness_contrast_saturation_match_torchvision(images):
    f = torch.tensor([0.6, 1.0, 1.4, 0.9, 1.2, 0.0])
    col = f.view(-1, 1, 1, 1)
    torch.testing.assert_close(adjust_brightness(images, col), per_image(TF.adjust_brightness, images, f))
    torch.testing.assert_close(adjust_contrast(images, col), per_image(TF.adjust_contrast, images, f))
    torch.testing.assert_close(adjust_saturation(images, col), per_image(TF.adjust_saturation, images, f))


def test_hue_matches_torchvision(images):
    shifts = torch.tensor([-0.1, -0.05, 0.0, 0.03, 0.1, 0.5])
    torch.testing.assert_close(adjust_hue(images, shifts), per_image(TF.adjust_hue, images, shifts),
                               atol=1e-5, rtol=1e-5)


def test_grayscale_blur_solarize_match_torchvision(images):
    torch.testing.assert_close(grayscale(images).expand_as(images), TF.rgb_to_grayscale(images, num_output_channels=3))
    sigmas = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0, 0.7])
    ours = gaussian_blur(images, sigmas, 5)
    ref = torch.stack([TF.gaussian_blur(img, [5, 5], [float(s), float(s)]) for img, s in zip(images, sigmas)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(solarize(images, 0.5), TF.solarize(images, 0.5))


def test_resized_crop_is_an_exact_crop_at_native_size(images):
    boxes = torch.tensor([[0, 0, 20, 20], [3, 4, 10, 10], [10, 14, 10, 10], [0, 0, 8, 8], [12, 16, 8, 8],
                          [5, 5, 12, 12]], dtype=torch.float64)
    for size_box in (boxes[:1], boxes[1:3], boxes[3:5], boxes[5:]):
        s = int(size_box[0, 2])
        idx = [int(i) for i in range(len(boxes)) if int(boxes[i, 2]) == s]
        out = resized_crop(images[idx], boxes[idx], s, mode="bicubic")
        for o, i in zip(out, idx):
            t, l = int(boxes[i, 0]), int(boxes[i, 1])
            torch.testing.assert_close(o, images[i, :, t: t + s, l: l + s], atol=1e-5, rtol=0)


def test_flip_and_upscale_match_torchvision_inside_the_border(images):
    boxes = torch.tensor([[4, 6, 10, 10]] * 2, dtype=torch.float64)
    flip = torch.tensor([False, True])
    out = resized_crop(images[:2], boxes, 20, flip, mode="bilinear")
    ref = TF.resized_crop(images[:2], 4, 6, 10, 10, [20, 20], antialias=False)
    torch.testing.assert_close(out[0, :, 1:-1, 1:-1], ref[0, :, 1:-1, 1:-1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 1:-1, 1:-1], torch.flip(ref[1], dims=[2])[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_crop_boxes_follow_torchvision_distribution():
    g = torch.Generator().manual_seed(1)
    n, h, w = 4000, 60, 80
    ours = sample_crop_boxes(n, h, w, (0.08, 1.0), (3 / 4, 4 / 3), g)
    top, left, bh, bw = ours.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh >= 1).all() and (bw >= 1).all()
    torch.manual_seed(1)
    img = torch.zeros(3, h, w)
    ref = torch.tensor([RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)],
                       dtype=torch.float64)
    area_ours = (bh * bw / (h * w)).mean()
    area_ref = (ref[:, 2] * ref[:, 3] / (h * w)).mean()
    assert abs(area_ours - area_ref) < 0.02
    assert abs(torch.log(bw / bh).mean() - torch.log(ref[:, 3] / ref[:, 2]).mean()) < 0.03
    assert abs((left / (w - bw + 1)).mean() - 0.5) < 0.03


def test_crop_fallback_on_extreme_aspect():
    g = torch.Generator().manual_seed(2)
    boxes = sample_crop_boxes(50, 4, 200, (0.9, 1.0), (3 / 4, 4 / 3), g)  # nothing fits: centre fallback
    assert (boxes[:, 2] == 4).all() and (boxes[:, 3] == round(4 * 4 / 3)).all()


def test_probabilities_of_the_asymmetric_views():
    cfg = augment_config(16, jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.2),
                         crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), mean=(0.0,), std=(1.0,))
    views = BatchViews(cfg)
    x = torch.full((4000, 3, 16, 16), 204, dtype=torch.uint8)  # 0.8: solarised to 0.2
    v1, v2 = views(x, torch.Generator().manual_seed(3))
    assert (v1.mean(dim=(1, 2, 3)) > 0.5).all()  # view 1 is never solarised
    frac = (v2.mean(dim=(1, 2, 3)) < 0.5).float().mean().item()
    assert 0.17 < frac < 0.23
    cfg = augment_config(16, jitter_p=0.8, brightness=0.4, contrast=0.0, saturation=0.0, hue=0.0, grayscale_p=0.0,
                         solarize_p=(0.0, 0.0), crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), mean=(0.0,), std=(1.0,))
    x = torch.full((4000, 3, 16, 16), 100, dtype=torch.uint8)
    v1, _ = BatchViews(cfg)(x, torch.Generator().manual_seed(4))
    changed = ((v1.mean(dim=(1, 2, 3)) - 100 / 255).abs() > 1e-4).float().mean().item()
    assert 0.77 < changed < 0.83


def test_batch_views_shapes_determinism_and_one_channel():
    cfg = augment_config(28, channels=1)
    views = BatchViews(cfg)
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    a1, a2 = views(x, torch.Generator().manual_seed(5))
    b1, b2 = views(x, torch.Generator().manual_seed(5))
    assert a1.shape == a2.shape == (8, 3, 28, 28) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, a2)


def test_factory_adapts_to_small_and_gray_images():
    big = augment_config(224)
    assert big.blur_p == (1.0, 0.1) and big.solarize_p == (0.0, 0.2) and big.crop_scale == (0.08, 1.0)
    assert big.blur_kernel == 23 and big.interpolation == "bicubic"
    small = augment_config(32)
    assert small.blur_p == (0.0, 0.0) and small.crop_scale == (0.2, 1.0)
    gray = augment_config(28, channels=1)
    assert gray.saturation == gray.hue == gray.grayscale_p == 0.0 and gray.brightness == 0.4
    assert augment_config(28, channels=1, crop_scale=[0.3, 1.0]).crop_scale == (0.3, 1.0)
    with pytest.raises(ValueError, match="unknown augmentation field"):
        augment_config(32, blurr=1)


def test_two_view_transform_on_pil_images():
    img = Image.new("RGB", (50, 40), (200, 30, 90))
    v1, v2 = TwoViewTransform(augment_config(32))(img)
    assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.float32
    assert math.isfinite(float(v1.sum()))


def test_rank_slices_of_a_global_batch_match_one_process():
    """Under data parallelism each rank augments its slice exactly as one process augments the whole batch."""
    cfg = augment_config(32)
    views = BatchViews(cfg)
    x = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    whole1, whole2 = views(x, torch.Generator().manual_seed(9))
    for world in (2, 3, 4):
        n = 12 // world
        parts = [views(x[r * n: (r + 1) * n], torch.Generator().manual_seed(9), rank=r, world=world)
                 for r in range(world)]
        torch.testing.assert_close(torch.cat([p[0] for p in parts]), whole1)
        torch.testing.assert_close(torch.cat([p[1] for p in parts]), whole2)


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_downscaling_is_antialiased_like_torchvision(mode):
    noise = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0, 0, 64, 64], [8, 4, 48, 40], [10, 20, 20, 44]], dtype=torch.float64)  # last: mixed
    flip = torch.tensor([False, True, False])
    out = resized_crop(noise, boxes, 32, flip, mode=mode)
    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[mode]
    for i, (t, l, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(noise[i], t, l, h, w, [32, 32], interpolation=interp, antialias=True)
        ref = torch.flip(ref, dims=[2]) if flip[i] else ref
        torch.testing.assert_close(out[i], ref.clamp(0, 1) if mode == "bicubic" else ref, atol=1e-5, rtol=0)
    # A 2x downscale of noise averages pairs of pixels: the std falls to about half (0.29 -> ~0.12), as with
    # torchvision; point sampling would keep most of it.
    assert abs(float(out[0].std()) - float(TF.resize(noise[0], [32, 32], interpolation=interp,
                                                     antialias=True).std())) < 0.01
    assert float(out[0].std()) < 0.17


def test_photometric_with_parameters_matches_torchvision_step_by_step():
    from barlowtwins.transforms.params import view_params
    from barlowtwins.transforms.tensor import photometric

    cfg = augment_config(24, blur_kernel=5)
    x = torch.rand(12, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    p = view_params(cfg, 1, seed=0, step=3, positions=range(12), heights=24, widths=24)
    p.jitter[:] = True
    p.gray[::3] = True
    p.blur[::2] = True
    p.solarize[1::2] = True
    out = photometric(x, p, cfg)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for i in range(12):
        y = x[i]
        for op in p.order[i].tolist():
            y = ops[op](y, float(p.factors[i, op]))
        if p.gray[i]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if p.blur[i]:
            y = TF.gaussian_blur(y, [5, 5], [float(p.sigma[i])] * 2)
        if p.solarize[i]:
            y = TF.solarize(y, 128 / 255)
        torch.testing.assert_close(out[i], y, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("size", [8, 31, 224])
def test_worker_views_are_normalised_like_the_float64_reference(size):
    """The cpu path's (B, S, S, 3) uint8 views -> (B, 3, S, S) float: (x / 255 - mean) / std per channel."""
    bv = BatchViews(augment_config(size))
    g = torch.Generator().manual_seed(size)
    x = torch.randint(0, 256, (3, size, size, 3), dtype=torch.uint8, generator=g)
    out = bv.finish_hwc_uint8(x)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    ref = (x.permute(0, 3, 1, 2).double() / 255 - mean) / std
    assert out.shape == (3, 3, size, size) and out.dtype == torch.float32
    assert out.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-6)
    bv.finish_hwc_uint8(torch.zeros(2, size + 1, size + 1, 3, dtype=torch.uint8))  # another size: new constants
    torch.testing.assert_close(bv.finish_hwc_uint8(x), out, rtol=0, atol=0)
