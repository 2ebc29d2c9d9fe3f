"""Random parameters of the two views, per sample, as a pure function of (seed, step, global position).

    >>> p = view_params(cfg, view=0, seed=0, step=12, positions=np.arange(64), heights=h, widths=w)
    >>> p.box[3], p.flip[3], p.order[3]        # the crop, flip and colour-op order of sample 3 of step 12

Every path that makes views (in-memory batches, loader workers on the CPU, batched ops on a GPU) reads its
numbers from here. Because the numbers depend only on (seed, step, position in the global batch, view), and
not on which process or worker asks, ranks draw different crops for their samples, one process and W
processes draw the same views of a global batch, and a resumed run draws exactly the views of the
uninterrupted one.

The uniforms come from a counter-based hash (SplitMix64's finaliser over the four integers), not from a
stateful generator: a worker can compute the numbers of one sample without replaying anyone else's.
`params_from_uniforms` turns a (n, K) block of uniforms into parameters; `BatchViews` feeds it from a
``torch.Generator`` instead, so both draw the same distributions through the same code.

The columns of each op and their meaning come from the spec (`spec.SPEC.columns`); each op's parameters are
one draw here (`DRAWS`, keyed by op name; an op with only a probability is a plain coin flip and needs none).
Every draw is vectorised numpy over the samples. The one exception is the crop's box, which depends on the
image size: a loader worker learns the size of each file only from its header, one file at a time, so the
crop also has a per-sample form in Python floats (`crop_box`, the same arithmetic as `crop_boxes`, equal to
the bit) and everything else of the batch is drawn in one numpy pass beforehand (`sample_uniforms`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from barlowtwins.transforms.spec import CROP_TRIES, NUM_UNIFORMS, Op

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


class ViewParams:
    """Per-sample parameters of one view: the ``outputs`` of every op of the spec, as CPU tensors of first
    dimension n, by name (``p.box``, ``p.flip`` ...). For the paper's ops:

    box: (n, 4) float64 [top, left, height, width] in pixels of the source image; flip: (n,) bool;
    jitter: (n,) bool (colour jitter applied); order: (n, 4) int64, the positions of brightness(0),
    contrast(1), saturation(2), hue(3) in the jitter; factors: (n, 4) float64 of those four ops (hue: a shift
    in turns); gray, blur, solarize: (n,) bool; sigma: (n,) float64 blur sigma.
    """

    def __init__(self, values: dict[str, torch.Tensor]):
        self.values = values

    def __getattr__(self, name: str) -> torch.Tensor:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(f"no view parameter '{name}'") from None

    def __len__(self) -> int:
        return len(next(iter(self.values.values())))

    @staticmethod
    def cat(params: list[ViewParams]) -> ViewParams:
        """The parameters of several views of one batch, one after the other along the sample dimension: the
        views of the images repeated in that order are then made in one pass of every op."""
        return ViewParams({k: torch.cat([p.values[k] for p in params]) for k in params[0].values})

    def sample(self, i: int) -> SampleView:
        """Sample ``i`` as plain Python numbers."""
        return SampleView({k: _python(v[i].tolist()) for k, v in self.values.items()})


class SampleView(dict):
    """The parameters of one view of one sample as plain Python numbers (the values of `ViewParams`, one row;
    rows as tuples), read as attributes (``p.box``, ``p.flip``): what a loader worker needs for one image,
    without the cost of numpy or torch per-element access."""

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"no view parameter '{name}'") from None


def _python(value):
    return tuple(value) if isinstance(value, list) else value


# --------------------------------------------------------------------------------------------------------
# The crop: torchvision's RandomResizedCrop.get_params from given uniforms, batched and per sample.
# --------------------------------------------------------------------------------------------------------

def crop_boxes(u_area: np.ndarray, u_ratio: np.ndarray, u_top: np.ndarray, u_left: np.ndarray, heights, widths,
               scale: tuple[float, float], ratio: tuple[float, float]) -> np.ndarray:
    """torchvision's RandomResizedCrop.get_params from given uniforms -> (n, 4) [top, left, h, w] float64.

    ``u_area`` / ``u_ratio``: (n, 10) uniforms for the ten tries at a box of random area and log-aspect; the
    first try that fits wins; if none does, the largest centred box with a clamped aspect ratio (torchvision's
    fallback). ``heights`` / ``widths``: per-sample image sizes (scalars or (n,)).
    """
    n = u_area.shape[0]
    height = np.broadcast_to(np.asarray(heights, dtype=np.float64), (n,))
    width = np.broadcast_to(np.asarray(widths, dtype=np.float64), (n,))
    target = (height * width)[:, None] * (u_area * (scale[1] - scale[0]) + scale[0])
    aspect = crop_aspects(u_ratio, ratio)
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
    return np.stack([top, left, h, w], axis=1)


def crop_aspects(u_ratio: np.ndarray, ratio: tuple[float, float]) -> np.ndarray:
    """The candidate aspect ratios (w / h) of the tries: log-uniform in ``ratio``."""
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    return np.exp(u_ratio * (log_hi - log_lo) + log_lo)


def crop_box(u_area: list[float], aspect: list[float], u_top: float, u_left: float, height: float, width: float,
             scale: tuple[float, float], ratio: tuple[float, float]) -> tuple[float, float, float, float]:
    """`crop_boxes` for one sample, in Python floats: ``u_area`` its ten area uniforms, ``aspect`` its ten
    candidate aspect ratios (`crop_aspects`, computed by the caller with numpy so that every number is the one
    `crop_boxes` computes). The same arithmetic in the same order: equal to the bit. Python rather than numpy
    because a loader worker calls it once per file, where numpy's per-call overhead would dominate."""
    height, width = float(height), float(width)  # pixel counts (ints), in float arithmetic as numpy has them
    area = height * width
    for k in range(CROP_TRIES):
        target = area * (u_area[k] * (scale[1] - scale[0]) + scale[0])
        w = float(round(math.sqrt(target * aspect[k])))  # round half to even, as np.round
        h = float(round(math.sqrt(target / aspect[k])))
        if 0 < w <= width and 0 < h <= height:
            return float(math.floor(u_top * (height - h + 1))), float(math.floor(u_left * (width - w + 1))), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, float(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = float(round(height * max(ratio))), height
    else:
        w, h = width, height
    return float(math.floor((height - h) / 2)), float(math.floor((width - w) / 2)), h, w


def jitter_ranges(cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(lows, highs) of the brightness, contrast, saturation factors and the hue shift, as torchvision draws them."""
    return ((max(0.0, 1 - cfg.brightness), max(0.0, 1 - cfg.contrast), max(0.0, 1 - cfg.saturation), -cfg.hue),
            (1 + cfg.brightness, 1 + cfg.contrast, 1 + cfg.saturation, cfg.hue))


# --------------------------------------------------------------------------------------------------------
# One draw per op: (op, its uniform columns by meaning, cfg, view, heights, widths) -> {output: (n, ...) array}.
# A column of count 1 comes as (n,), a wider one as (n, count).
# --------------------------------------------------------------------------------------------------------

def _draw_crop(op: Op, u: dict, cfg, view: int, heights, widths) -> dict:
    return {"box": crop_boxes(u["area"], u["ratio"], u["top"], u["left"], heights, widths, cfg.crop_scale,
                              cfg.crop_ratio)}


def _draw_jitter(op: Op, u: dict, cfg, view: int, heights, widths) -> dict:
    lows, highs = (np.array(r) for r in jitter_ranges(cfg))
    return {"jitter": u["apply"] < cfg.jitter_p,
            "order": np.argsort(u["order"], axis=1, kind="stable"),  # a uniformly random permutation of the ops
            "factors": u["factors"] * (highs - lows) + lows}


def _draw_blur(op: Op, u: dict, cfg, view: int, heights, widths) -> dict:
    lo, hi = cfg.blur_sigma
    return {"blur": u["apply"] < cfg.prob("blur", view), "sigma": u["sigma"] * (hi - lo) + lo}


def _coin(op: Op, u: dict, cfg, view: int, heights, widths) -> dict:
    """An op that only happens with its probability: its flag (first output) from its ``apply`` column."""
    return {op.outputs[0]: u["apply"] < cfg.prob(op.name, view)}


DRAWS: dict[str, Callable[..., dict]] = {"crop": _draw_crop, "jitter": _draw_jitter, "blur": _draw_blur}


def draw(u: np.ndarray, cfg, view: int, heights, widths, ops=None) -> dict[str, np.ndarray]:
    """(n, K) uniforms -> {output name: (n, ...) numpy array} for the ops of ``cfg``'s spec (only those named in
    ``ops``, if given), each from its own columns."""
    out = {}
    for op in cfg.spec.ops:
        if ops is not None and op.name not in ops:
            continue
        cols = {m: (u[:, s.start] if s.stop - s.start == 1 else u[:, s]) for m, s in cfg.spec.columns[op.name].items()}
        out.update(DRAWS.get(op.name, _coin)(op, cols, cfg, view, heights, widths))
    return out


def params_from_uniforms(u: np.ndarray, cfg, view: int, heights, widths, ops=None) -> ViewParams:
    """(n, K) uniforms -> the parameters of view ``view`` (0 or 1) under ``cfg`` (AugmentConfig); ``ops``: only
    the parameters of these ops (names), e.g. ("crop", "flip")."""
    return ViewParams({k: torch.from_numpy(np.ascontiguousarray(v))
                       for k, v in draw(u, cfg, view, heights, widths, ops).items()})


def view_params(cfg, view: int, seed: int, step: int, positions, heights, widths,
                stream: int | None = None) -> ViewParams:
    """The parameters of view ``view`` for the samples at global ``positions`` of step ``step``. ``stream``: the
    uniforms' view key when it is not ``view`` (the small crops of multi-crop: streams 2, 3, ..., each drawn
    with the per-view settings of view 0 or 1, `transforms.multicrop`)."""
    u = counter_uniforms(seed, step, positions, view if stream is None else stream, k=cfg.spec.num_uniforms)
    return params_from_uniforms(u, cfg, view, heights, widths)


# --------------------------------------------------------------------------------------------------------
# Per sample, for the loader workers: a batch's uniforms and size-free parameters in one numpy pass, then
# the crop of each file once its size is known.
# --------------------------------------------------------------------------------------------------------

# The ops whose parameters depend on the image size, drawn per file by `sample_views_from` (the crop only).
SIZED = ("crop",)


class SampleDraws(NamedTuple):
    """What `sample_views_from` needs for the samples of one step (`sample_uniforms`)."""

    rows: tuple[list[dict], ...]  # [view][sample]: the parameters that do not depend on the image size
    crops: tuple[list[tuple], ...]  # [view][sample]: (area uniforms, aspects, top uniform, left uniform)


def sample_uniforms(cfg, seed: int, step: int, positions, streams=(0, 1), views=None) -> SampleDraws:
    """The random numbers of the samples at ``positions`` of one step, in one numpy pass: every size-free
    parameter of each view (drawn as `view_params` draws them) and the crop's uniforms and aspect ratios.
    ``streams``: the views' uniform keys (default both full views); ``views``: the per-view settings each
    stream is drawn with (default: the stream itself), as ``view_params(..., view, stream=stream)``."""
    views = tuple(streams) if views is None else tuple(views)
    u = counter_uniforms(seed, step, positions, tuple(streams), k=cfg.spec.num_uniforms)  # (V, n, K)
    n = u.shape[1]
    free = [op.name for op in cfg.spec.ops if op.name not in SIZED]
    rows, crops = [], []
    for s, view in enumerate(views):
        params = draw(u[s], cfg, view, None, None, ops=free)
        values = [list(map(tuple, a.tolist())) if a.ndim == 2 else a.tolist() for a in params.values()]
        rows.append([dict(zip(params, v)) for v in zip(*values)] if values else [{} for _ in range(n)])
        c = cfg.spec.columns["crop"]
        crops.append(list(zip(u[s][:, c["area"]].tolist(), crop_aspects(u[s][:, c["ratio"]], cfg.crop_ratio)
                              .tolist(), u[s][:, c["top"].start].tolist(), u[s][:, c["left"].start].tolist())))
    return SampleDraws(tuple(rows), tuple(crops))


def sample_views_from(cfg, draws: SampleDraws, j: int, height: int, width: int) -> tuple[SampleView, ...]:
    """Every view's parameters of sample ``j`` of `sample_uniforms` for an image of ``height`` x ``width``:
    equal to row j of `view_params` for those views, to the bit, as Python numbers."""
    out = []
    for view in range(len(draws.rows)):
        s = SampleView(draws.rows[view][j])
        u_area, aspect, u_top, u_left = draws.crops[view][j]
        s["box"] = crop_box(u_area, aspect, u_top, u_left, height, width, cfg.crop_scale, cfg.crop_ratio)
        out.append(s)
    return tuple(out)
