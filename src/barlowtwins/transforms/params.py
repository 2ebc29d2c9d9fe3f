"""Random parameters of the two views, per sample, as a pure function of (seed, step, global position).

    >>> p = view_params(cfg, view=0, seed=0, step=12, positions=np.arange(64), heights=h, widths=w)
    >>> p.boxes[3], p.flip[3], p.order[3]      # the crop, flip and colour-op order of sample 3 of step 12

Every path that makes views (in-memory batches, loader workers on the CPU, batched ops on a GPU) reads its
numbers from here. Because the numbers depend only on (seed, step, position in the global batch, view), and
not on which process or worker asks, ranks draw different crops for their samples, one process and W
processes draw the same views of a global batch, and a resumed run draws exactly the views of the
uninterrupted one.

The uniforms come from a counter-based hash (SplitMix64's finaliser over the four integers), not from a
stateful generator: a worker can compute the numbers of one sample without replaying anyone else's.
`params_from_uniforms` turns a (n, K) block of uniforms into parameters; `BatchViews` feeds it from a
``torch.Generator`` instead, so both draw the same distributions through the same code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

# Column layout of the K uniforms drawn per sample and view.
CROP_TRIES = 10
_AREA, _RATIO = slice(0, 10), slice(10, 20)
_TOP, _LEFT, _FLIP, _JITTER = 20, 21, 22, 23
_ORDER, _FACTORS = slice(24, 28), slice(28, 32)
_GRAY, _BLUR, _SIGMA, _SOLARIZE = 32, 33, 34, 35
NUM_UNIFORMS = 36

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic): a bijective, well-mixed hash."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def counter_uniforms(seed: int, step: int, positions, view, k: int = NUM_UNIFORMS) -> np.ndarray:
    """(n, k) float64 uniforms in [0, 1): a pure function of (seed, step, position, view, column).
    ``view`` may also be a sequence of views: then (len(view), n, k), one block per view, in one pass."""
    pos = np.asarray(positions, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    views = np.asarray(view, dtype=np.uint64)
    with np.errstate(over="ignore"):
        h = _mix(np.array([seed], dtype=np.int64).astype(np.uint64) + _GOLDEN)
        h = _mix(h ^ (np.uint64(step & 0xFFFFFFFFFFFFFFFF) + _GOLDEN))
        h = _mix(h ^ (views.reshape(views.shape + (1, 1)) * _GOLDEN + np.uint64(1)))  # ([v,] 1, 1)
        h = _mix(h ^ (pos * _GOLDEN + np.uint64(7)))  # ([v,] n, 1)
        z = _mix(h ^ (np.arange(k, dtype=np.uint64).reshape(1, -1) * _GOLDEN + np.uint64(13)))  # ([v,] n, k)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def generator_uniforms(g: torch.Generator, n: int, rank: int = 0, world: int = 1,
                       k: int = NUM_UNIFORMS) -> np.ndarray:
    """(n, k) uniforms from a generator: a global batch of ``n * world`` rows drawn, this rank's slice kept."""
    u = torch.rand(n * world, k, generator=g, dtype=torch.float64)[rank * n: (rank + 1) * n]
    return u.numpy()


@dataclass
class ViewParams:
    """Per-sample parameters of one view (CPU tensors, first dimension n).

    boxes: (n, 4) float64 [top, left, height, width] in pixels of the source image; flip: (n,) bool;
    jitter: (n,) bool (colour jitter applied); order: (n, 4) int64, the positions of brightness(0),
    contrast(1), saturation(2), hue(3) in the jitter; factors: (n, 4) float64 of those four ops (hue: a shift
    in turns); gray, blur, solarize: (n,) bool; sigma: (n,) float64 blur sigma.
    """

    boxes: torch.Tensor
    flip: torch.Tensor
    jitter: torch.Tensor
    order: torch.Tensor
    factors: torch.Tensor
    gray: torch.Tensor
    blur: torch.Tensor
    sigma: torch.Tensor
    solarize: torch.Tensor

    def __len__(self) -> int:
        return len(self.flip)

    def row(self, i: int) -> "ViewParams":
        """The parameters of sample ``i`` alone (n = 1)."""
        return ViewParams(**{k: v[i: i + 1] for k, v in self.__dict__.items()})

    def select(self, idx: torch.Tensor) -> "ViewParams":
        return ViewParams(**{k: v[idx] for k, v in self.__dict__.items()})

    def sample(self, i: int) -> "SampleView":
        """Sample ``i`` as plain Python numbers."""
        return SampleView(tuple(self.boxes[i].tolist()), bool(self.flip[i]), bool(self.jitter[i]),
                          tuple(self.order[i].tolist()), tuple(self.factors[i].tolist()), bool(self.gray[i]),
                          bool(self.blur[i]), float(self.sigma[i]), bool(self.solarize[i]))


class SampleView(NamedTuple):
    """The parameters of one view of one sample as plain Python numbers (the fields of `ViewParams`, one row):
    what a loader worker needs for one image, without the cost of numpy or torch per-element access."""

    box: tuple[float, float, float, float]  # top, left, height, width in pixels of the source image
    flip: bool
    jitter: bool
    order: tuple[int, ...]
    factors: tuple[float, float, float, float]
    gray: bool
    blur: bool
    sigma: float
    solarize: bool


def crop_boxes(u_area: np.ndarray, u_ratio: np.ndarray, u_top: np.ndarray, u_left: np.ndarray, heights, widths,
               scale: tuple[float, float], ratio: tuple[float, float]) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params from given uniforms -> (n, 4) [top, left, h, w] float64.

    ``u_area`` / ``u_ratio``: (n, 10) uniforms for the ten tries at a box of random area and log-aspect; the
    first try that fits wins; if none does, the largest centred box with a clamped aspect ratio (torchvision's
    fallback). ``heights`` / ``widths``: per-sample image sizes (scalars or (n,)). numpy, not torch: a loader
    worker calls this for one sample at a time, where torch's per-op overhead would cost milliseconds.
    """
    n = u_area.shape[0]
    height = np.broadcast_to(np.asarray(heights, dtype=np.float64), (n,))
    width = np.broadcast_to(np.asarray(widths, dtype=np.float64), (n,))
    target = (height * width)[:, None] * (u_area * (scale[1] - scale[0]) + scale[0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(u_ratio * (log_hi - log_lo) + log_lo)
    w = np.round(np.sqrt(target * aspect))
    h = np.round(np.sqrt(target / aspect))
    ok = (w > 0) & (w <= width[:, None]) & (h > 0) & (h <= height[:, None])
    first = np.argmax(ok, axis=1)[:, None]  # index of the first fitting try (0 if none)
    any_ok = ok.any(axis=1)
    w = np.take_along_axis(w, first, 1)[:, 0]
    h = np.take_along_axis(h, first, 1)[:, 0]
    # Fallback: centre crop with the aspect ratio clamped to `ratio`.
    in_ratio = width / height
    fw = np.where(in_ratio < min(ratio), width, np.where(in_ratio > max(ratio), np.round(height * max(ratio)), width))
    fh = np.where(in_ratio < min(ratio), np.round(width / min(ratio)), height)
    w = np.where(any_ok, w, fw)
    h = np.where(any_ok, h, fh)
    top = np.where(any_ok, np.floor(u_top * (height - h + 1)), np.floor((height - h) / 2))
    left = np.where(any_ok, np.floor(u_left * (width - w + 1)), np.floor((width - w) / 2))
    return torch.from_numpy(np.stack([top, left, h, w], axis=1))


def crop_box(u: list[float], aspect: list[float], height: int, width: int, scale: tuple[float, float],
             ratio: tuple[float, float]) -> tuple[float, float, float, float]:
    """`crop_boxes` for one sample, in Python floats: ``u`` the sample's uniforms, ``aspect`` its ten
    candidate aspect ratios (``np.exp`` of the log-aspects, computed by the caller with numpy so that every
    number is the one `crop_boxes` computes). The same arithmetic in the same order: equal to the bit."""
    height, width = float(height), float(width)
    area = height * width
    for k in range(CROP_TRIES):
        target = area * (u[_AREA.start + k] * (scale[1] - scale[0]) + scale[0])
        w = float(round(math.sqrt(target * aspect[k])))  # round half to even, as np.round
        h = float(round(math.sqrt(target / aspect[k])))
        if 0 < w <= width and 0 < h <= height:
            return math.floor(u[_TOP] * (height - h + 1)), math.floor(u[_LEFT] * (width - w + 1)), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, float(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = float(round(height * max(ratio))), height
    else:
        w, h = width, height
    return math.floor((height - h) / 2), math.floor((width - w) / 2), h, w


def jitter_ranges(cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lows, highs) of the brightness, contrast, saturation factors and the hue shift, as torchvision draws them."""
    return ((max(0.0, 1 - cfg.brightness), max(0.0, 1 - cfg.contrast), max(0.0, 1 - cfg.saturation), -cfg.hue),
            (1 + cfg.brightness, 1 + cfg.contrast, 1 + cfg.saturation, cfg.hue))


def sample_uniforms(cfg, seed: int, step: int, positions) -> tuple[list, list]:
    """What `sample_views_from` needs for the samples at ``positions`` of one step, in one numpy pass: the
    uniforms of both views and their candidate aspect ratios, as nested lists [view][sample][...]."""
    u = counter_uniforms(seed, step, positions, (0, 1))  # (2, n, K)
    log_lo, log_hi = math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])
    aspects = np.exp(u[:, :, _RATIO] * (log_hi - log_lo) + log_lo)  # as `crop_boxes` computes them
    return u.tolist(), aspects.tolist()


def sample_views_from(cfg, u: tuple[list, list], aspects: tuple[list, list], height: int,
                      width: int) -> tuple[SampleView, SampleView]:
    """Both views' parameters of one sample from its rows of `sample_uniforms` (``u[v]``, ``aspects[v]``)."""
    lows, highs = jitter_ranges(cfg)
    out = []
    for view in (0, 1):
        uv, p = u[view], cfg.view(view)
        order = uv[_ORDER]
        out.append(SampleView(
            box=tuple(float(x) for x in crop_box(uv, aspects[view], height, width, cfg.crop_scale, cfg.crop_ratio)),
            flip=uv[_FLIP] < cfg.hflip_p, jitter=uv[_JITTER] < cfg.jitter_p,
            order=tuple(sorted(range(4), key=order.__getitem__)),  # stable, as np.argsort(kind="stable")
            factors=tuple(x * (hi - lo) + lo for x, lo, hi in zip(uv[_FACTORS], lows, highs)),
            gray=uv[_GRAY] < cfg.grayscale_p, blur=uv[_BLUR] < p["blur_p"],
            sigma=uv[_SIGMA] * (cfg.blur_sigma[1] - cfg.blur_sigma[0]) + cfg.blur_sigma[0],
            solarize=uv[_SOLARIZE] < p["solarize_p"]))
    return out[0], out[1]


def sample_views(cfg, seed: int, step: int, position: int, height: int,
                 width: int) -> tuple[SampleView, SampleView]:
    """Both views' parameters of the sample at global ``position`` of step ``step`` (image ``height`` x
    ``width``): equal to row 0 of `view_params` for views 0 and 1, as Python numbers (a loader worker draws
    a whole batch's uniforms with `sample_uniforms` and calls `sample_views_from` per image)."""
    u, aspects = sample_uniforms(cfg, seed, step, [position])
    return sample_views_from(cfg, (u[0][0], u[1][0]), (aspects[0][0], aspects[1][0]), height, width)


def params_from_uniforms(u: np.ndarray, cfg, view: int, heights, widths) -> ViewParams:
    """(n, NUM_UNIFORMS) uniforms -> the parameters of view ``view`` (0 or 1) under ``cfg`` (AugmentConfig)."""
    p = cfg.view(view)
    boxes = crop_boxes(u[:, _AREA], u[:, _RATIO], u[:, _TOP], u[:, _LEFT], heights, widths, cfg.crop_scale,
                       cfg.crop_ratio)
    lows, highs = (np.array(r) for r in jitter_ranges(cfg))
    t = torch.from_numpy
    return ViewParams(
        boxes=boxes,
        flip=t(u[:, _FLIP] < cfg.hflip_p),
        jitter=t(u[:, _JITTER] < cfg.jitter_p),
        order=t(np.argsort(u[:, _ORDER], axis=1, kind="stable")),  # a uniformly random permutation of the ops
        factors=t(u[:, _FACTORS] * (highs - lows) + lows),
        gray=t(u[:, _GRAY] < cfg.grayscale_p),
        blur=t(u[:, _BLUR] < p["blur_p"]),
        sigma=t(u[:, _SIGMA] * (cfg.blur_sigma[1] - cfg.blur_sigma[0]) + cfg.blur_sigma[0]),
        solarize=t(u[:, _SOLARIZE] < p["solarize_p"]),
    )


def view_params(cfg, view: int, seed: int, step: int, positions, heights, widths) -> ViewParams:
    """The parameters of view ``view`` for the samples at global ``positions`` of step ``step``."""
    return params_from_uniforms(counter_uniforms(seed, step, positions, view), cfg, view, heights, widths)
