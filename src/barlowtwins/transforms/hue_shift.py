"""PIL's HSV hue shift of an RGB image, to the bit, in about a third of the time of PIL's HSV round trip.

    >>> out = shift_hue(img, 13)     # = HSV(img) with H + 13 (mod 256), back to RGB, exactly as PIL computes it

torchvision's PIL ``adjust_hue`` (the hue op of the official Barlow Twins pipeline) converts to PIL's HSV, adds
``int8(shift * 255)`` to the uint8 H channel and converts back. On a 224-px view the two PIL conversions cost
about 3 ms, the largest single cost of a view on a CPU host. Here the same uint8 results come from uint32
numpy arithmetic and small lookup tables (about 1 MB, so every lookup hits the CPU caches; a full 2^24-entry
table would be slower, each lookup a cache miss):

- RGB -> HSV. V = max(R, G, B). PIL's float expressions for H depend only on the channel differences, so H is
  a table over (R - G, G - B), filled by converting one pixel per entry with PIL itself; S is a table over
  (max, min), filled the same way.
- HSV -> RGB. PIL's ``hsv2rgb`` puts V, p = round(V (1 - S/255)) and one of q = round(V (1 - f S/255)),
  t = round(V (1 - (S - f S)/255)) (q in odd sextants, t in even ones; f the fraction of 6 H / 255) into the
  channels in a per-sextant order. The factor of the middle value depends on (H, S) only; it is tabulated
  with the C code's float32/float64 casts, so V x factor rounds as in PIL. The tables are checked against
  PIL's own conversion when they are built.

`tests/test_hue_shift.py` compares `shift_hue` with PIL on all 2^24 colours.
"""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

_TABLES: dict | None = None

# hsv2rgb's (R, G, B) per sextant floor(6 H / 255) % 6, as indices into (V, mid, p).
_SEXTANT_SOURCES = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [2, 1, 0], [1, 2, 0], [0, 2, 1]])


def _pil_convert(values: np.ndarray, mode: str, to: str) -> np.ndarray:
    """(n, 3) uint8 pixels of ``mode`` -> (n, 3) uint8 pixels of ``to``, converted by PIL."""
    n = len(values)
    img = Image.frombytes(mode, (n, 1), np.ascontiguousarray(values, dtype=np.uint8).tobytes())
    return np.asarray(img.convert(to)).reshape(n, 3)


def _build() -> dict:
    v = np.arange(256)
    # H over (R - G, G - B), both in [-255, 255]: one pixel per realisable entry (the rest stay 0, never read).
    dr, dg = np.meshgrid(np.arange(-255, 256), np.arange(-255, 256), indexing="ij")  # R - G, G - B
    g = np.clip(255 - np.maximum(dr, 0) - np.maximum(-dg, 0), 0, 255)  # highest G that keeps R, B in range
    r, b = g + dr, g - dg
    ok = (r >= 0) & (r <= 255) & (b >= 0) & (b <= 255)
    hue = np.zeros(511 * 511, np.uint8)
    px = np.stack([r[ok], g[ok], b[ok]], -1)
    hue[np.flatnonzero(ok.reshape(-1))] = _pil_convert(px, "RGB", "HSV")[:, 0]
    # S over (max, min).
    mx, mn = np.meshgrid(v, v, indexing="ij")
    sat = _pil_convert(np.stack([mx, mn, np.minimum(mx, mn)], -1).reshape(-1, 3), "RGB", "HSV")[:, 1]
    sat = np.where((mn <= mx).reshape(-1), sat, 0).astype(np.uint8)
    # The middle value's factor over (H, S), with the C code's casts: f float32, f S float32, the rest float64.
    hf = v.astype(np.float32).astype(np.float64) * 6.0 / 255.0
    sextant = np.floor(hf).astype(np.int64) % 6
    f = (hf - np.floor(hf)).astype(np.float32)[:, None]
    s32 = v.astype(np.float32)[None, :]
    fs = (f * s32).astype(np.float32)
    q = 1.0 - fs.astype(np.float64) / 255.0  # odd sextants
    t = 1.0 - (s32 - fs).astype(np.float32).astype(np.float64) / 255.0  # even sextants
    factor = np.where((sextant % 2 == 1)[:, None], q, t)
    p = np.floor(v[None, :].astype(np.float64) * (1.0 - v[:, None] / 255.0) + 0.5)  # [S, V]
    # Output weights per shifted H: (V, mid, p) -> V * wv + mid * wm + p * wp packs R | G << 8 | B << 16.
    weights = (1 << (8 * np.argsort(_SEXTANT_SOURCES[sextant], axis=1))).astype(np.uint32)  # (256, 3)
    tables = {"hue": hue, "sat": sat, "factor": factor.reshape(-1).astype(np.float32),
              "p": p.astype(np.uint8).reshape(-1), "weights": [np.ascontiguousarray(weights[:, k]) for k in range(3)]}
    # Check both directions against PIL on a grid that covers every H and S (and V at its extremes).
    rng = np.random.default_rng(0)
    rgb = np.concatenate([rng.integers(0, 256, (200_000, 3)), np.repeat(v[:, None], 3, 1)]).astype(np.uint8)
    hs_grid = np.stack(np.meshgrid(v, v, np.array([0, 1, 2, 37, 128, 254, 255]), indexing="ij"), -1).reshape(-1, 3)
    r32, g32, b32 = (c.astype(np.uint32) for c in rgb.T)
    fwd_ok = np.array_equal(np.stack(_rgb_to_hsv(r32, g32, b32, tables), -1), _pil_convert(rgb, "RGB", "HSV"))
    h, s, v = hs_grid.T
    packed = _hsv_to_rgb(h.astype(np.uint8), s.astype(np.uint8), v.astype(np.uint32), tables)
    inv = np.stack([packed & 255, (packed >> 8) & 255, packed >> 16], -1)
    if not (fwd_ok and np.array_equal(inv, _pil_convert(hs_grid, "HSV", "RGB"))):
        raise RuntimeError("this Pillow's HSV conversion differs from the one hue_shift reproduces")
    return tables


def tables() -> dict:
    """The lookup tables (built at first use, about 0.1 s; a process that forks workers after calling this
    shares them). Empty when the installed Pillow converts differently from what they reproduce (then
    `shift_hue` uses PIL's own round trip, with one warning)."""
    global _TABLES
    if _TABLES is None:
        try:
            _TABLES = _build()
        except RuntimeError as e:
            warnings.warn(f"{e}; using PIL's HSV conversion for the hue jitter (slower, same result)", stacklevel=2)
            _TABLES = {}
    return _TABLES


def pil_shift_hue(img: Image.Image, delta: int) -> Image.Image:
    """The reference: PIL's HSV round trip with the H channel shifted through a 256-entry lookup table."""
    h, s, v = img.convert("HSV").split()
    return Image.merge("HSV", (h.point([(j + delta) % 256 for j in range(256)]), s, v)).convert("RGB")


def _rgb_to_hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray, t: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Planar uint32 R, G, B (n,) -> H, S (uint8) and V (uint32), PIL's values."""
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    h = t["hue"].take((r + 255 - g) * 511 + (g + 255 - b))
    s = t["sat"].take((mx << 8) | mn)
    return h, s, mx


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray, t: dict) -> np.ndarray:
    """H, S (uint8), V (uint32) (n,) -> packed uint32 R | G << 8 | B << 16 (n,), PIL's values."""
    hi = h.astype(np.intp)
    s32 = s.astype(np.uint32)
    # float32 is enough: floor(V x factor + 0.5) in float32 equals PIL's float64 rounding for every
    # (H, S, V) (checked over all 2^24 in the tests).
    mid = (v.astype(np.float32) * t["factor"].take((hi << 8) | s32) + np.float32(0.5)).astype(np.uint32)
    p = t["p"].take((s32 << 8) | v)
    wv, wm, wp = (w.take(hi) for w in t["weights"])
    return v * wv + mid * wm + p * wp


def shift_hue(img: Image.Image, delta: int) -> Image.Image:
    """``img`` with PIL's uint8 H channel shifted by ``delta`` (mod 256): equal to
    ``Image.merge("HSV", (H.point(lambda x: (x + delta) % 256), S, V)).convert(img.mode)``. Like torchvision's
    ``adjust_hue``, single-channel images (L, 1, I, F) come back unchanged and other modes go through RGB."""
    if img.mode != "RGB":
        return img if img.mode in ("L", "1", "I", "F") else shift_hue(img.convert("RGB"), delta).convert(img.mode)
    t = tables()
    if not t:
        return pil_shift_hue(img, delta)
    px = np.frombuffer(img.tobytes("raw", "RGBX"), "<u4")  # bytes R, G, B, X: R | G << 8 | B << 16 | X << 24
    h, s, v = _rgb_to_hsv(px & 255, (px >> 8) & 255, (px >> 16) & 255, t)
    h += np.uint8(delta % 256)  # uint8 arithmetic wraps, as PIL's lookup table does
    packed = _hsv_to_rgb(h, s, v, t).astype("<u4", copy=False)  # back to bytes R, G, B, 0 on any host
    return Image.frombytes("RGB", img.size, packed.tobytes(), "raw", "RGBX")
