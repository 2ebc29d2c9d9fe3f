"""The table-driven hue shift against PIL's own HSV round trip: every one of the 2^24 colours, several shifts."""

import numpy as np
import pytest
import torchvision.transforms.functional as F1
from PIL import Image

from barlowtwins.transforms import hue_shift
from barlowtwins.transforms.hue_shift import pil_shift_hue as pil_hue_shift
from barlowtwins.transforms.hue_shift import shift_hue


@pytest.fixture(scope="module")
def every_colour():
    c = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([c & 255, (c >> 8) & 255, c >> 16], -1).astype(np.uint8)
    return Image.frombytes("RGB", (4096, 4096), rgb.tobytes())


@pytest.mark.parametrize("delta", [-128, -25, -1, 0, 13, 300])
def test_equals_pil_on_every_colour(every_colour, delta):
    ours, ref = np.asarray(shift_hue(every_colour, delta)), np.asarray(pil_hue_shift(every_colour, delta))
    bad = (ours != ref).any(-1)
    assert not bad.any(), f"{bad.sum()} colours differ, e.g. {np.asarray(every_colour)[bad][:3].tolist()}"


@pytest.mark.parametrize("shift", [-0.5, -0.1, 0.0, 0.037, 0.1, 0.5])
def test_equals_torchvision_adjust_hue_on_odd_sizes(shift):
    from barlowtwins.transforms.pil import adjust_hue

    rng = np.random.default_rng(1)
    for h, w in ((1, 1), (3, 7), (61, 33)):
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        out = adjust_hue(img, shift)
        assert out.mode == "RGB" and out.size == (w, h)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(F1.adjust_hue(img, shift)))


def test_a_pillow_that_converts_differently_falls_back_to_its_own_conversion(monkeypatch):
    """If the installed Pillow's HSV arithmetic ever changes, the tables' self-check fails: one warning, and the
    hue jitter uses PIL's own round trip (same result, slower) instead of wrong pixels."""
    real = hue_shift._pil_convert

    def shifted(values, mode, to):  # a "Pillow" whose HSV -> RGB differs by one level
        out = real(values, mode, to)
        return (out.astype(np.int16) + (to == "RGB")).clip(0, 255).astype(np.uint8)

    monkeypatch.setattr(hue_shift, "_pil_convert", shifted)
    monkeypatch.setattr(hue_shift, "_TABLES", None)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8))
    with pytest.warns(UserWarning, match="using PIL's HSV conversion"):
        out = shift_hue(img, 9)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(pil_hue_shift(img, 9)))
    monkeypatch.setattr(hue_shift, "_TABLES", None)  # the next test builds the real tables again


def test_other_modes_like_torchvision():
    rng = np.random.default_rng(3)
    rgb = Image.fromarray(rng.integers(0, 256, (7, 5, 3), dtype=np.uint8))
    gray = rgb.convert("L")
    assert shift_hue(gray, 20) is gray  # torchvision returns single-channel images unchanged
    rgba = rgb.convert("RGBA")
    out = shift_hue(rgba, 20)
    assert out.mode == "RGBA"
    np.testing.assert_array_equal(np.asarray(out.convert("RGB")), np.asarray(pil_hue_shift(rgb, 20)))
