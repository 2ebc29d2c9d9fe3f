"""The views of one image file, made whole in a data-loader worker with PIL (the ``--data-path cpu`` path).

    >>> img, full, p1, p2 = decode_for_views(path, params_for_size, cfg.image_size)   # one open, one decode
    >>> v1, v2 = two_views(img, full, p1, p2, cfg)                   # (S, S, 3) uint8 arrays

Every step was chosen by measurement on 224-px views: PIL's C loops on uint8 pixels where they are the fastest,
numpy where they are not (hue, blur); torchvision v2 ops on uint8 tensors convert to float inside and were
3-10x slower per op (see `benchmarks/RESULTS.md`):

- decode once for both views, with ``Image.draft`` letting libjpeg decode at 1/2, 1/4 or 1/8 scale when both
  crops still have at least the output's pixels at that scale;
- crop + resize in one ``Image.resize(box=...)`` (antialiased: PIL's filters widen their support when shrinking),
  flip by transposition;
- brightness and contrast as one 256-entry lookup each (the arithmetic of ``ImageEnhance``, which
  torchvision's functional ops use for PIL images, to the bit), saturation with ``ImageEnhance``, hue with
  `hue_shift` (PIL's HSV hue shift to the bit, in half the time of PIL's HSV round trip), grayscale by
  conversion, blur with torchvision's Gaussian kernel (`gaussian_blur`: the paper's blur, faster than PIL's
  box-filter approximation that the official code uses), solarisation by lookup;
- the output stays uint8: conversion to float and normalisation happen once per batch on the training device.

Parameters (`params.SampleView`, one per view) come from the same pure function as every other path
(`params.sample_views_from`, equal to `params.view_params` to the bit). The executor is `OPS`, one function
per op of the spec, (img, SampleView, cfg) -> img, run in the spec's order by `spec.run_ops`.
"""

from __future__ import annotations

import math
from operator import mul

import numpy as np
from PIL import Image, ImageEnhance

from barlowtwins.transforms.hue_shift import shift_hue
from barlowtwins.transforms.params import SampleView
from barlowtwins.transforms.spec import run_ops

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
             "nearest": Image.Resampling.NEAREST}


def adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    """= torchvision's PIL ``adjust_hue``: PIL's uint8 H channel plus ``int8(shift * 255)``, wrapping at 256."""
    return shift_hue(img, int(np.int8(shift * 255)))  # truncation toward zero, as np.int8(float) in torchvision


def lookup(img: Image.Image, table: list[int]) -> Image.Image:
    """``img.point(table)`` for a table of ints: PIL's C lookup called directly, because ``Image.point`` first
    rounds every entry of the table in Python (0.1 ms a call, more than the lookup itself on a 224-px view)."""
    try:
        return img._new(img.im.point(table, None))
    except (AttributeError, TypeError):  # a Pillow without these internals
        return img.point(table)


def blend_lut(base: float, factor: float) -> list[int]:
    """The lookup table of PIL's ``Image.blend(constant base, image, factor)``: base + factor (v - base) in float32,
    truncated, clipped to [0, 255] (the arithmetic of PIL's C code, so the result is the same to the bit)."""
    v = np.arange(256, dtype=np.int32)
    out = np.float32(base) + np.float32(factor) * (v - int(base)).astype(np.float32)
    out = np.where(out <= 0, 0, np.where(out >= 255, 255, out)).astype(np.int32)  # C's (UINT8) cast truncates
    return out.tolist() * 3


def adjust_brightness(img: Image.Image, factor: float) -> Image.Image:
    """= ``ImageEnhance.Brightness(img).enhance(factor)`` (torchvision's PIL op), as one table lookup."""
    return lookup(img, blend_lut(0, factor))


def adjust_contrast(img: Image.Image, factor: float) -> Image.Image:
    """= ``ImageEnhance.Contrast(img).enhance(factor)``: blend with the rounded mean of the L image, one lookup."""
    hist = img.convert("L").histogram()
    mean = int(sum(map(mul, hist, range(256))) / max(sum(hist), 1) + 0.5)
    return lookup(img, blend_lut(mean, factor))


def adjust_saturation(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(img).enhance(factor)


_SOLARIZE = [j if j < 128 else 255 - j for j in range(256)] * 3  # = ImageOps.solarize(img, threshold=128)


def gaussian_blur(img: Image.Image, sigma: float, kernel_size: int) -> Image.Image:
    """torchvision's Gaussian blur (the kernel of ``kernel_size`` taps, reflect padding, rounded to uint8),
    the blur of the in-memory and device paths too, as separable float32 passes in numpy. The taps beyond
    4 sigma (weights < 1e-4 of the centre's) are left out: about half the time of PIL's box-filter
    approximation at sigma = 2, a quarter at small sigma, and closer to the Gaussian (PIL's filter, which
    the official code uses, differs from it by up to 9 levels; this one by at most 1)."""
    if not sigma > 0:
        raise ValueError(f"the blur's sigma must be positive, got {sigma}")
    r = min(kernel_size // 2, max(1, math.ceil(4 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    a = np.asarray(img)
    h, w, _ = a.shape
    padded = np.pad(a, ((r, r), (r, r), (0, 0)), mode="reflect").astype(np.float32)  # (h + 2r, w + 2r, 3)
    rows = padded[:, r:r + w] * k[r]  # horizontal pass over every padded row: (h + 2r, w, 3)
    tmp = np.empty_like(rows)
    for j in range(1, r + 1):  # symmetric kernel: one multiply per pair of taps
        np.add(padded[:, r + j:r + j + w], padded[:, r - j:r - j + w], out=tmp)
        rows += tmp.__imul__(k[r + j])
    out = rows[r:r + h] * k[r]  # vertical pass: (h, w, 3)
    tmp = tmp[:h]
    for j in range(1, r + 1):
        np.add(rows[r + j:r + j + h], rows[r - j:r - j + h], out=tmp)
        out += tmp.__imul__(k[r + j])
    return Image.fromarray(np.clip(np.rint(out, out=out), 0, 255).astype(np.uint8))


def draft_size(width: int, height: int, params: list[SampleView], size) -> tuple[int, int] | None:
    """The smallest decode size at which every crop still has at least its output's pixels on each side, or None
    when that is the full size (libjpeg then decodes at the smallest 1/2^k scale at least this large).
    ``size``: the output side of every crop, or a sequence with one per crop (multi-crop's small crops)."""
    sizes = [size] * len(params) if isinstance(size, int) else list(size)
    shrink = min(min(p.box[2], p.box[3]) / s for p, s in zip(params, sizes, strict=True))
    if shrink < 2:
        return None
    return math.ceil(width / shrink), math.ceil(height / shrink)


def draft_scale(full: int, decoded: int) -> float:
    """The exact scale of a drafted decode along one side: libjpeg's DCT scaling decodes at 1/2^k, giving
    ceil(full / 2^k) pixels, so ``decoded / full`` is not the scale (101 -> 51 px is 1/2, not 0.505) and
    would shift a crop by up to 2^k source pixels."""
    if decoded >= full:
        return 1.0
    k = 0
    while k < 3 and -(-full // 2 ** (k + 1)) >= decoded:
        k += 1
    return 1.0 / 2 ** k


# --------------------------------------------------------------------------------------------------------
# The per-image executor: one function per op of the spec, (img, SampleView, cfg) -> img.
# --------------------------------------------------------------------------------------------------------

def _crop(img: Image.Image, p: SampleView, cfg) -> Image.Image:
    """Crop ``p.box`` ([top, left, h, w] in pixels of ``img``) and resize to the view size, in one call."""
    top, left, h, w = p.box
    size = cfg.image_size
    return img.resize((size, size), _RESAMPLE[cfg.interpolation], box=(left, top, left + w, top + h))


def _flip(img: Image.Image, p: SampleView, cfg) -> Image.Image:
    return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if p.flip else img


_JITTER = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _jitter(img: Image.Image, p: SampleView, cfg) -> Image.Image:
    """Brightness, contrast, saturation and hue in the sample's op order ``p.order``."""
    if p.jitter:
        strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        for op_id in p.order:
            if strengths[op_id] != 0:  # torchvision skips a zero-strength op entirely
                img = _JITTER[op_id](img, p.factors[op_id])
    return img


def _gray(img: Image.Image, p: SampleView, cfg) -> Image.Image:
    return img.convert("L").convert("RGB") if p.gray else img


def _blur(img: Image.Image, p: SampleView, cfg) -> Image.Image:
    return gaussian_blur(img, p.sigma, cfg.blur_kernel) if p.blur else img


def _solarize(img: Image.Image, p: SampleView, cfg) -> Image.Image:
    return lookup(img, _SOLARIZE) if p.solarize else img


OPS = {"crop": _crop, "flip": _flip, "jitter": _jitter, "gray": _gray, "blur": _blur, "solarize": _solarize}


def view(img: Image.Image, p: SampleView, cfg, scale: tuple[float, float] = (1.0, 1.0), ops=None) -> Image.Image:
    """One whole view of a decoded RGB image (no normalisation). ``p.box`` is in pixels of the full-size image;
    ``scale`` = (x, y) maps it onto a drafted decode; ``ops``: the executor (default `OPS`)."""
    if scale != (1.0, 1.0):
        top, left, h, w = p.box
        sx, sy = scale
        p = SampleView(p, box=(top * sy, left * sx, h * sy, w * sx))
    return run_ops(OPS if ops is None else ops, img, p, cfg)


def two_views(img: Image.Image, full_size: tuple[int, int], p1: SampleView, p2: SampleView,
              cfg) -> tuple[np.ndarray, np.ndarray]:
    """Both views of a decoded image as (S, S, 3) uint8 arrays; ``full_size`` = (width, height) before any draft."""
    v1, v2 = views_of(img, full_size, (p1, p2), cfg)  # one array per parameter set: two
    return v1, v2


def views_of(img: Image.Image, full_size: tuple[int, int], params, cfg) -> list[np.ndarray]:
    """One (S, S, 3) uint8 array per parameter set in ``params``, all under ``cfg`` (e.g. multi-crop's small
    crops); ``full_size`` = (width, height) before any draft."""
    scale = (draft_scale(full_size[0], img.width), draft_scale(full_size[1], img.height))
    return [np.array(view(img, p, cfg, scale)) for p in params]
