"""The views of one image file, made whole in a data-loader worker with PIL (the ``--data-path cpu`` path).

    >>> v1, v2 = two_views_from_file(path, p1, p2, cfg)      # (S, S, 3) uint8 arrays, one decode for both

Every step is a C loop in PIL on uint8 pixels, chosen by measurement against the alternatives (torchvision v2
ops on uint8 tensors convert to float inside and were 3-10x slower per op on a 224-px view; see
`benchmarks/RESULTS.md`):

- decode once for both views, with ``Image.draft`` letting libjpeg decode at 1/2, 1/4 or 1/8 scale when both
  crops still have at least the output's pixels at that scale;
- crop + resize in one ``Image.resize(box=...)`` (antialiased: PIL's filters widen their support when shrinking),
  flip by transposition;
- brightness, contrast, saturation with ``ImageEnhance`` (what torchvision's functional ops do for PIL images),
  hue through PIL's HSV conversion and a 256-entry lookup table (the same uint8 arithmetic as torchvision's PIL
  ``adjust_hue``, without its numpy round trip), grayscale by conversion, blur with PIL's Gaussian filter (as
  the official Barlow Twins code), solarisation with a lookup table;
- the output stays uint8: conversion to float and normalisation happen once per batch on the training device.

Parameters (`views.ViewParams`, one row per view) come from the same pure function as every other path.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from .data import PIL_FORMATS, read_image, unreadable
from .views import ViewParams

_RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}


def hue_lut(shift: float) -> list[int]:
    """torchvision's PIL hue shift: the H channel (uint8) plus ``int8(shift * 255)``, wrapping at 256."""
    delta = int(np.int8(shift * 255))  # truncation toward zero, as np.int8(float) does in torchvision
    return [(j + delta) % 256 for j in range(256)]


def adjust_hue(img: Image.Image, shift: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    return Image.merge("HSV", (h.point(hue_lut(shift)), s, v)).convert("RGB")


def blend_lut(base: float, factor: float) -> list[int]:
    """The lookup table of PIL's ``Image.blend(constant base, image, factor)``: base + factor (v - base) in float32,
    truncated, clipped to [0, 255] (the arithmetic of PIL's C code, so the result is the same to the bit)."""
    v = np.arange(256, dtype=np.int32)
    out = np.float32(base) + np.float32(factor) * (v - int(base)).astype(np.float32)
    out = np.where(out <= 0, 0, np.where(out >= 255, 255, out)).astype(np.int32)  # C's (UINT8) cast truncates
    return out.tolist() * 3


def adjust_brightness(img: Image.Image, factor: float) -> Image.Image:
    """= ``ImageEnhance.Brightness(img).enhance(factor)`` (torchvision's PIL op), as one table lookup."""
    return img.point(blend_lut(0, factor))


def adjust_contrast(img: Image.Image, factor: float) -> Image.Image:
    """= ``ImageEnhance.Contrast(img).enhance(factor)``: blend with the rounded mean of the L image, one lookup."""
    hist = img.convert("L").histogram()
    mean = int(sum(i * c for i, c in enumerate(hist)) / max(sum(hist), 1) + 0.5)
    return img.point(blend_lut(mean, factor))


def adjust_saturation(img: Image.Image, factor: float) -> Image.Image:
    return ImageEnhance.Color(img).enhance(factor)


_JITTER = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def photometric(img: Image.Image, p: ViewParams, cfg) -> Image.Image:
    """Colour jitter in the sample's op order, grayscale, blur and solarisation of one RGB image (row 0 of p)."""
    if bool(p.jitter[0]):
        strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        for op_id in p.order[0].tolist():
            if strengths[op_id] != 0:  # torchvision skips a zero-strength op entirely
                img = _JITTER[op_id](img, float(p.factors[0, op_id]))
    if bool(p.gray[0]):
        img = img.convert("L").convert("RGB")
    if bool(p.blur[0]):
        img = img.filter(ImageFilter.GaussianBlur(radius=float(p.sigma[0])))
    if bool(p.solarize[0]):
        img = ImageOps.solarize(img, threshold=128)
    return img


def geometric(img: Image.Image, p: ViewParams, cfg, scale: tuple[float, float] = (1.0, 1.0)) -> Image.Image:
    """Crop ``p.boxes[0]`` (in pixels of the full-size image; ``scale`` maps them onto a drafted decode),
    resize to the view size and flip."""
    top, left, h, w = p.boxes[0].tolist()
    sx, sy = scale
    box = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    size = cfg.image_size
    out = img.resize((size, size), _RESAMPLE[cfg.interpolation], box=box)
    return out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if bool(p.flip[0]) else out


def draft_size(width: int, height: int, params: list[ViewParams], size: int) -> tuple[int, int] | None:
    """The smallest decode size at which every crop still has at least ``size`` pixels on each side, or None
    when that is the full size (libjpeg then decodes at the smallest 1/2^k scale at least this large)."""
    shrink = min(min(float(p.boxes[0, 2]), float(p.boxes[0, 3])) / size for p in params)
    if shrink < 2:
        return None
    return math.ceil(width / shrink), math.ceil(height / shrink)


def two_views(img: Image.Image, full_size: tuple[int, int], p1: ViewParams, p2: ViewParams,
              cfg) -> tuple[np.ndarray, np.ndarray]:
    """Both views of a decoded image as (S, S, 3) uint8 arrays; ``full_size`` = (width, height) before any draft."""
    scale = (img.width / full_size[0], img.height / full_size[1])
    return tuple(np.array(photometric(geometric(img, p, cfg, scale), p, cfg)) for p in (p1, p2))


def image_size(path: str) -> tuple[int, int]:
    """(width, height) from the file's header (no decode); a `DataError` when it is not a readable image."""
    try:
        with Image.open(path, formats=PIL_FORMATS) as img:
            return img.size
    except Exception as e:  # noqa: BLE001 -- any failure means the file is unreadable
        raise unreadable(path, e) from None


def decode_for_views(path: str, params_for_size, size: int):
    """Read ``path`` once for two views: ``params_for_size(width, height) -> (p1, p2)`` draws the parameters
    from the header's size; the decode is drafted when both crops allow. Returns (image, full size, p1, p2)."""
    width, height = image_size(path)
    p1, p2 = params_for_size(width, height)
    img = read_image(path, draft=draft_size(width, height, [p1, p2], size))
    return img, (width, height), p1, p2
