"""The batched executor: its kernels against torchvision's functional ops at extreme settings, the crop's two
resampling paths, and `BatchViews` (probabilities, determinism, rank slices, normalisation). Each op of the
spec against torchvision for drawn parameters: `test_spec.py`."""

import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from barlowtwins.transforms.params import view_params
from barlowtwins.transforms.spec import augment_config, run_ops
from barlowtwins.transforms.tensor import (
    OPS,
    BatchViews,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    grayscale,
    resized_crop,
    solarize,
)


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


def test_upscale_matches_torchvision_inside_the_border(images):
    """Inside the border the upscale equals torchvision's plain (not antialiased) bilinear resize too."""
    boxes = torch.tensor([[4, 6, 10, 10], [0, 3, 12, 9]], dtype=torch.float64)
    out = resized_crop(images[:2], boxes, 20, mode="bilinear")
    for i, (t, l, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(images[i], t, l, h, w, [20, 20], antialias=False)
        torch.testing.assert_close(out[i, :, 1:-1, 1:-1], ref[:, 1:-1, 1:-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_upscale_equals_torchvision_antialiased_resized_crop_everywhere(images, mode):
    """The in-memory upsampling uses the filter of torchvision's antialiased resize (bicubic a = -0.5, taps
    inside the box), edges included: within 1/255 of ``resized_crop(..., antialias=True)``."""
    interp = InterpolationMode.BICUBIC if mode == "bicubic" else InterpolationMode.BILINEAR
    boxes = torch.tensor([[4, 6, 10, 10], [0, 3, 12, 9], [1, 1, 7, 13], [0, 0, 20, 20]], dtype=torch.float64)
    out = resized_crop(images[:4], boxes, 20, mode=mode)
    for i, (t, l, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(images[i], t, l, h, w, [20, 20], interpolation=interp, antialias=True)
        ref = ref.clamp(0, 1) if mode == "bicubic" else ref
        assert float((out[i] - ref).abs().max()) <= 1 / 255


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
    out = resized_crop(noise, boxes, 32, mode=mode)
    interp = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}[mode]
    for i, (t, l, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(noise[i], t, l, h, w, [32, 32], interpolation=interp, antialias=True)
        torch.testing.assert_close(out[i], ref.clamp(0, 1) if mode == "bicubic" else ref, atol=1e-5, rtol=0)
    # A 2x downscale of noise averages pairs of pixels: the std falls to about half (0.29 -> ~0.12), as with
    # torchvision; point sampling would keep most of it.
    assert abs(float(out[0].std()) - float(TF.resize(noise[0], [32, 32], interpolation=interp,
                                                     antialias=True).std())) < 0.01
    assert float(out[0].std()) < 0.17


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


def test_the_two_halves_make_the_whole_view():
    """`geometric` then `photometric` (the device path's split) = all ops of the spec in one pass."""
    cfg = augment_config(24, blur_kernel=5)
    bv = BatchViews(cfg)
    x = torch.randint(0, 256, (10, 3, 30, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    p = view_params(cfg, 0, seed=1, step=0, positions=range(10), heights=30, widths=28)
    halves = bv.photometric(bv.geometric(x.float() / 255, p), p)
    torch.testing.assert_close(halves, run_ops(OPS, x.float() / 255, p, cfg), rtol=0, atol=0)
    v1, _ = bv.views(x, p, p)
    torch.testing.assert_close(v1, bv.finish(halves), rtol=0, atol=0)
    assert halves.shape == (10, 3, 24, 24) and not torch.equal(halves, bv.geometric(x.float() / 255, p))


def test_normalisation_is_right_on_every_device_in_turn():
    """The mean and std are kept on the host and copied to each device the views come on: views on meta (a
    device without data), then on the CPU again, are normalised like the float64 reference, both layouts."""
    bv = BatchViews(augment_config(8))
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 8, 8, generator=g)
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    assert bv.finish(x.to("meta")).device.type == "meta"
    torch.testing.assert_close(bv.finish(x).double(), (x.double() - mean) / std, rtol=0, atol=1e-6)
    u = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8, generator=g)
    assert bv.finish_hwc_uint8(u.to("meta")).shape == (2, 3, 8, 8)
    ref = (u.permute(0, 3, 1, 2).double() / 255 - mean) / std
    torch.testing.assert_close(bv.finish_hwc_uint8(u).double(), ref, rtol=0, atol=2e-6)


def test_hue_sector_offsets_are_cached_per_device_and_dtype():
    """`adjust_hue`'s constant is built once per (device, dtype) and matches the float64 reference on each."""
    from barlowtwins.transforms import tensor

    tensor._CONSTANTS.clear()
    a = tensor._constant((5.0, 3.0, 1.0), torch.device("cpu"), torch.float32)
    assert tensor._constant((5.0, 3.0, 1.0), torch.device("cpu"), torch.float32) is a
    b = tensor._constant((5.0, 3.0, 1.0), torch.device("cpu"), torch.float64)
    assert b is not a and b.dtype == torch.float64
    assert torch.equal(b, torch.tensor([5.0, 3.0, 1.0], dtype=torch.float64))
    assert tensor._constant((5.0, 3.0, 1.0), torch.device("meta"), torch.float32).device.type == "meta"
    assert len(tensor._CONSTANTS) == 3
