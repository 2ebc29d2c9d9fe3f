"""The loader-worker views (PIL): the kernels against torchvision's functional ops on PIL images at extreme
settings and sizes, and the drafted decode against the full one. Each op of the spec against torchvision for
drawn parameters: `test_spec.py`."""

import numpy as np
import pytest
import torchvision.transforms.functional as F1
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from barlowtwins.data.paths.cpu import decode_for_views
from barlowtwins.transforms import pil as P
from barlowtwins.transforms.params import sample_uniforms, sample_views_from
from barlowtwins.transforms.spec import augment_config


@pytest.fixture
def photo():
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((70, 60), Image.BICUBIC), dtype=np.int16)
    return Image.fromarray(np.clip(smooth + rng.integers(-10, 11, (60, 70, 3)), 0, 255).astype(np.uint8))


def arr(img):
    return np.asarray(img).astype(np.int16)


@pytest.mark.parametrize("factor", [0.0, 0.6, 1.0, 1.37, 2.5])
def test_jitter_ops_equal_torchvision_on_pil(photo, factor):
    np.testing.assert_array_equal(arr(P.adjust_brightness(photo, factor)), arr(F1.adjust_brightness(photo, factor)))
    np.testing.assert_array_equal(arr(P.adjust_contrast(photo, factor)), arr(F1.adjust_contrast(photo, factor)))
    np.testing.assert_array_equal(arr(P.adjust_saturation(photo, factor)), arr(F1.adjust_saturation(photo, factor)))


@pytest.mark.parametrize("shift", [-0.5, -0.1, -0.013, 0.0, 0.002, 0.07, 0.1, 0.5])
def test_hue_equals_torchvision_on_pil(photo, shift):
    np.testing.assert_array_equal(arr(P.adjust_hue(photo, shift)), arr(F1.adjust_hue(photo, shift)))


@pytest.mark.parametrize("sigma", [0.1, 0.25, 0.7, 1.0, 1.6, 2.0, 3.0])
@pytest.mark.parametrize("size", [(60, 70), (9, 5), (224, 224)])
def test_blur_equals_torchvision_gaussian_blur(sigma, size):
    """torchvision's kernel of 23 taps with reflect padding, within one level (rounding), any sigma and size."""
    h, w = size
    rng = np.random.default_rng(int(sigma * 10) + h)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    k = 23 if min(h, w) > 11 else 2 * (min(h, w) // 2) - 1  # torchvision's reflect padding needs pad < size
    ref = F1.to_pil_image(TF.gaussian_blur(F1.pil_to_tensor(img), [k, k], [sigma, sigma]))
    out = P.gaussian_blur(img, sigma, k)
    assert out.size == img.size and out.mode == "RGB"
    diff = np.abs(arr(out) - arr(ref))
    assert diff.max() <= 1 and diff.mean() < 0.01, (diff.max(), diff.mean())


def test_drafted_decode_is_close_to_the_full_decode(tmp_path):
    rng = np.random.default_rng(2)
    coarse = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    big = Image.fromarray(coarse).resize((480, 400), Image.BICUBIC)
    big.save(tmp_path / "big.jpg", quality=95)
    cfg = augment_config(64, crop_scale=(0.9, 1.0))

    draws = sample_uniforms(cfg, 0, 0, [0])

    def params(width, height):
        return sample_views_from(cfg, draws, 0, height, width)

    img, full, p1, p2 = decode_for_views(str(tmp_path / "big.jpg"), params, 64)
    assert full == (480, 400) and img.size == (120, 100)  # both crops >= 4 x 64 px: decoded at 1/4 scale
    for p in (p1, p2):
        assert min(p.box[2:]) * img.width / 480 >= 64  # still no upsampling
    drafted = P.two_views(img, full, p1, p2, cfg)
    plain = P.two_views(Image.open(tmp_path / "big.jpg").convert("RGB"), full, p1, p2, cfg)
    for a, b in zip(drafted, plain):
        assert a.shape == (64, 64, 3) and a.dtype == np.uint8
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0
    assert P.draft_size(480, 400, [p1, p2], 300) is None  # crops smaller than 2 x 300: full decode


def test_blur_rejects_a_sigma_that_is_not_positive():
    img = Image.new("RGB", (8, 8), (10, 20, 30))
    for sigma in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="sigma must be positive"):
            P.gaussian_blur(img, sigma, 23)
