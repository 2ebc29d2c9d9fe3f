"""The two views of a whole batch of tensors on any device: the batched executor of the view spec.

    >>> cfg = augment_config(image_size=224)                # the paper's recipe (BYOL's views)
    >>> batched = BatchViews(cfg)                           # whole batches on any device (CPU, CUDA)
    >>> v1, v2 = batched(uint8_images, generator)           # (B, C, H, W) uint8 -> two (B, 3, S, S) floats

View 1 / view 2 of the paper: random resized crop (scale 0.08-1, bicubic), horizontal flip (0.5), colour jitter
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8), grayscale (p 0.2), Gaussian blur
(sigma 0.1-2; p 1.0 / 0.1), solarisation (p 0.0 / 0.2), then normalisation.

`augment_config()` adapts the defaults: at 32 px and below blur is off (a 3-pixel kernel only smears the
object away) and the crop scale starts at 0.2; for 1-channel images the colour-only steps (saturation,
hue, grayscale) are off. Every field can still be set by hand.

`BatchViews` draws the same distributions as `TwoViewTransform` (tests compare each op with torchvision's
functional ops) but on a whole batch at once: on a GPU it keeps data loading off the critical path, and for
small in-memory data sets on a CPU it is many times faster than per-image transforms. Its ops are `OPS`, one
function per op of the spec (`spec.SPEC`), run in the spec's order by `spec.run_ops`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from barlowtwins.runtime.hardware import to_device
from barlowtwins.transforms.params import (
    ViewParams,
    generator_uniforms,
    params_from_uniforms,
)
from barlowtwins.transforms.spec import (
    AugmentConfig,
    augment_config,
    channel_values,
    run_ops,
)

_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


# --------------------------------------------------------------------------------------------------------
# Kernels on float (B, 3, H, W) images in [0, 1], each checked against torchvision's functional op.
# --------------------------------------------------------------------------------------------------------

def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Crop ``boxes`` ([top, left, h, w] in pixels) out of float images and resample to ``size`` x ``size``.

    Boxes no larger than the output (upsampling, e.g. every crop of an in-memory data set resized back to its
    own size) are resampled for the whole batch at once by two batched matrix products with the weights of
    torchvision's antialiased resize of the box (`_resize_weights`: PIL's bicubic a = -0.5 or triangle
    filter, taps inside the box, renormalised at its edges), so they equal ``resized_crop(..., antialias=True)``;
    a box of the output's size is a plain crop. A box larger than the output on either side is resized per image
    with ``F.interpolate(antialias=True)``, torchvision's antialiased resize: ``grid_sample`` alone would
    point-sample and alias (a 2x downscale of noise keeps nearly twice the standard deviation).
    """
    b, _, height, width = images.shape
    boxes = boxes.to(torch.float64).cpu()
    down = ((boxes[:, 2] > size) | (boxes[:, 3] > size)) if mode != "nearest" else torch.zeros(b, dtype=torch.bool)
    out = images.new_empty(b, images.shape[1], size, size)
    up = (~down).nonzero().squeeze(1)
    if len(up):
        idx = to_device(up, images.device)
        sub = images.index_select(0, idx) if len(up) < b else images
        resample = _grid_resized_crop if mode == "nearest" else _matrix_resized_crop
        out.index_copy_(0, idx, resample(sub, boxes[up], size, mode))
    for i in down.nonzero().squeeze(1).tolist():
        t, l, h, w = (int(v) for v in boxes[i].tolist())
        y = F.interpolate(images[i: i + 1, :, t: t + h, l: l + w], size=(size, size), mode=mode, antialias=True,
                          align_corners=False)
        out[i] = y[0]
    return out.clamp_(0, 1) if mode == "bicubic" else out


def _cubic(x: np.ndarray, a: float = -0.5) -> np.ndarray:
    """The bicubic filter of PIL and of torchvision's antialiased resize (a = -0.5; not grid_sample's -0.75)."""
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


_FILTERS = {"bicubic": (_cubic, 2.0), "bilinear": (lambda x: np.clip(1 - np.abs(x), 0, None), 1.0)}
_WEIGHTS: dict = {}


def _resize_weights(length: int, size: int, mode: str) -> np.ndarray:
    """(size, length) float64: row i holds the weights of output pixel i over the ``length`` input pixels of a
    box, as in ATen's antialiased interpolate (the same as PIL): centre (i + 0.5) * scale, support widened by
    the scale when shrinking, taps clipped to the box and renormalised. Cached per (length, size, mode)."""
    key = (length, size, mode)
    if key not in _WEIGHTS:
        f, support = _FILTERS[mode]
        scale = length / size
        inv = 1 / scale if scale >= 1 else 1.0
        support *= max(scale, 1.0)
        w = np.zeros((size, length))
        for i in range(size):
            centre = scale * (i + 0.5)
            lo, hi = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), length)
            taps = f((np.arange(lo, hi) - centre + 0.5) * inv)
            w[i, lo:hi] = taps / taps.sum()
        _WEIGHTS[key] = w
    return _WEIGHTS[key]


def _matrix_resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    """(B, C, H, W) float, integer boxes [top, left, h, w] (CPU) -> (B, C, S, S): out = Wy @ x @ Wx^T with
    Wy (B, S, H) and Wx (B, S, W) zero outside each box, built on the CPU from cached rows and copied once."""
    b, _, height, width = images.shape
    wy = np.zeros((b, size, height), dtype=np.float32)
    wx = np.zeros((b, size, width), dtype=np.float32)
    for k, (t, l, h, w) in enumerate(boxes.round().to(torch.int64).tolist()):
        wy[k, :, t: t + h] = _resize_weights(h, size, mode)
        wx[k, :, l: l + w] = _resize_weights(w, size, mode)
    wy_t = to_device(torch.from_numpy(wy), images.device).to(images.dtype).unsqueeze(1)  # (B, 1, S, H)
    wx_t = to_device(torch.from_numpy(wx), images.device).to(images.dtype).unsqueeze(1)  # (B, 1, S, W)
    return torch.matmul(torch.matmul(wy_t, images), wx_t.transpose(-1, -2))  # (B, C, S, S)


def _grid_resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    b, _, height, width = images.shape
    boxes = to_device(boxes.to(torch.float32), images.device)
    top, left, h, w = boxes.unbind(1)
    theta = images.new_zeros(b, 2, 3)
    theta[:, 0, 0] = w / width
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}[mode]
    return F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)


_CONSTANTS: dict = {}


def _constant(values: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A constant tensor of ``values``, built once per (values, device, dtype): creating it from a Python list
    on a GPU is a blocking host copy, which at every step would stall the host (up to 4 per view). The one copy
    of the first step goes through `to_device` (pinned and non-blocking on CUDA), so even that step waits for
    nothing."""
    key = (values, str(device), dtype)
    t = _CONSTANTS.get(key)
    if t is None:
        t = _CONSTANTS[key] = to_device(torch.tensor(values, dtype=dtype), device)
    return t


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma with torchvision's weights."""
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend for float images: factor * a + (1 - factor) * b, clamped to [0, 1].
    return (factor * a + (1 - factor) * b).clamp_(0, 1)


def adjust_brightness(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return (x * f).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return _blend(x, mean, f)


def adjust_saturation(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    return _blend(x, grayscale(x), f)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (fraction of a turn, per image) through HSV, as torchvision does.

    HSV -> RGB uses the closed form c_n = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6 with n = 5, 3, 1
    for R, G, B: the same values as torchvision's six-sector selection, in a few elementwise passes instead of
    six stacked candidates and five ``torch.where`` over the full images.
    """
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    eqc = maxc == minc
    cr = maxc - minc
    ones = torch.ones_like(maxc)
    s = cr / torch.where(eqc, ones, maxc)
    cr_div = torch.where(eqc, ones, cr)
    rc, gc, bc = (maxc - r) / cr_div, (maxc - g) / cr_div, (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    hue = torch.fmod((hr + hg + hb) / 6.0 + 1.0, 1.0)
    hue6 = torch.remainder(hue + shift.view(-1, 1, 1), 1.0) * 6.0  # (B, H, W) in [0, 6)
    vs = maxc * s
    n = _constant((5.0, 3.0, 1.0), x.device, x.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + hue6.unsqueeze(1), 6.0)  # (B, 3, H, W)
    return maxc.unsqueeze(1) - vs.unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` and reflect padding (torchvision's kernel)."""
    b, c, h, w = x.shape
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma.to(x.device, x.dtype)[:, None]).square())  # (B, K)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    pad = kernel_size // 2
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # horizontal
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # vertical
    return y.view(b, c, h, w)


def solarize(x: torch.Tensor, threshold: float = 128 / 255) -> torch.Tensor:
    return torch.where(x >= threshold, 1.0 - x, x)


# --------------------------------------------------------------------------------------------------------
# The batched executor: one function per op of the spec, (x, ViewParams, cfg) -> x, run in order by `run_ops`.
# Each op runs once, on the sub-batch of samples that need it at that point (index_select / index_copy_),
# rather than on the whole batch followed by a ``torch.where``: the jitter costs 4 op evaluations per image
# instead of 16. The sub-batch indices are computed on the CPU from the CPU parameters, so nothing here waits
# for the device.
# --------------------------------------------------------------------------------------------------------

def _subset(mask: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    """Indices (on ``device``) of the samples where ``mask`` (CPU bool) is set; None when there are none."""
    idx = mask.nonzero().squeeze(1)
    return to_device(idx, device) if len(idx) else None


def _crop(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    """Crop ``p.box`` and resize (antialiased when shrinking) to the view size: (B, 3, H, W) -> (B, 3, S, S)."""
    return resized_crop(x, p.box, cfg.image_size, cfg.interpolation)


def _flip(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    """Mirror the samples of ``p.flip``: a copy of about half the views, about 1% of the time of the two views
    on a CPU (measured at 32 and 224 px), less on a GPU. It used to ride along in the crop's sampling grid;
    one function per op is worth that."""
    if (idx := _subset(p.flip, x.device)) is None:
        return x
    return x.index_copy(0, idx, x.index_select(0, idx).flip(-1))


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def _jitter(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    """Brightness, contrast, saturation and hue, in each sample's order ``p.order``, where ``p.jitter``."""
    if cfg.jitter_p == 0:
        return x
    strengths = (cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
    factors = p.factors.to(torch.float32)
    for position in range(4):
        for op_id, (op, strength) in enumerate(zip(_JITTER_OPS, strengths)):
            if strength == 0:
                continue  # torchvision skips a zero-strength op entirely
            mask = p.jitter & (p.order[:, position] == op_id)
            if (idx := _subset(mask, x.device)) is None:
                continue
            f = to_device(factors[mask, op_id], x.device)  # (b,): per-sample factor (hue: shift in turns)
            y = op(x.index_select(0, idx), f if op_id == 3 else f.view(-1, 1, 1, 1))
            x = x.index_copy(0, idx, y)
    return x


def _gray(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    if cfg.grayscale_p == 0 or (idx := _subset(p.gray, x.device)) is None:
        return x
    return x.index_copy(0, idx, grayscale(x.index_select(0, idx)).expand(-1, 3, -1, -1))


def _blur(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    if (idx := _subset(p.blur, x.device)) is None:
        return x
    sigma = to_device(p.sigma[p.blur], x.device)
    return x.index_copy(0, idx, gaussian_blur(x.index_select(0, idx), sigma, cfg.blur_kernel))


def _solarize(x: torch.Tensor, p: ViewParams, cfg: AugmentConfig) -> torch.Tensor:
    if not p.solarize.any():
        return x
    return torch.where(to_device(p.solarize, x.device).view(-1, 1, 1, 1), solarize(x), x)


OPS = {"crop": _crop, "flip": _flip, "jitter": _jitter, "gray": _gray, "blur": _blur, "solarize": _solarize}


class BatchViews:
    """The two views for a whole batch of uint8 images, on the images' device.

    ``views(images, p1, p2)`` applies given per-sample parameters (`params.ViewParams`, e.g. from
    `params.view_params`); ``__call__(images, generator)`` draws them from a generator first. ``geometric``
    (crop + flip) and ``photometric`` (colour) are the two halves. Parameters live on the CPU, so a seed
    gives the same views on any device. ``ops``: the executor (op name -> function; default `OPS`).
    """

    def __init__(self, cfg: AugmentConfig | None = None, ops=None):
        self.cfg = cfg or augment_config()
        self.ops = OPS if ops is None else ops
        # (1, 3, 1, 1) on the host, kept there: the source of every device copy (a copy back would be a sync)
        self._host_mean = torch.tensor(channel_values(self.cfg.mean)).view(1, 3, 1, 1)
        self._host_std = torch.tensor(channel_values(self.cfg.std)).view(1, 3, 1, 1)
        self._mean, self._std = self._host_mean, self._host_std  # on the device of the last views
        if self.cfg.blur_kernel % 2 == 0 or self.cfg.blur_kernel < 1:
            raise ValueError(f"blur_kernel must be odd and positive, got {self.cfg.blur_kernel}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator, rank: int = 0,
                 world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) uint8 -> two normalised (B, 3, S, S) views. Under data parallelism pass this process's
        ``rank`` and the ``world`` size: the images are this rank's slice of the global batch."""
        n, _, h, w = images.shape
        k = self.cfg.spec.num_uniforms
        p1, p2 = (params_from_uniforms(generator_uniforms(generator, n, rank, world, k), self.cfg, v, h, w)
                  for v in (0, 1))
        return self.views(images, p1, p2)

    def views(self, images: torch.Tensor, p1: ViewParams, p2: ViewParams) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) uint8 or float in [0, 1] -> the two normalised (B, 3, S, S) float32 views."""
        x = to_float_rgb(images)
        return self.finish(run_ops(self.ops, x, p1, self.cfg)), self.finish(run_ops(self.ops, x, p2, self.cfg))

    def view(self, images: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """One normalised (B, 3, S, S) float32 view of (B, C, H, W) uint8 or float images in [0, 1] (e.g. a small
        crop of multi-crop, under its own config). Pass `to_float_rgb` of the images when making several views
        of one batch: the conversion is then done once."""
        return self.finish(run_ops(self.ops, to_float_rgb(images), p, self.cfg))

    def geometric(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """The geometry ops of the spec: crop ``p.box`` and resize (antialiased when shrinking), flip ``p.flip``."""
        return run_ops(self.ops, x, p, self.cfg, kind="geometry")

    def photometric(self, x: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """Colour jitter, grayscale, blur, solarisation (no normalisation) of float (B, 3, S, S) in [0, 1]."""
        return run_ops(self.ops, to_float_rgb(x) if x.dtype == torch.uint8 else x, p, self.cfg, kind="colour")

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise float (B, 3, S, S) in [0, 1] with the configured mean and std."""
        if self._mean.device != x.device:  # moved once (pinned, non-blocking on CUDA), not copied at every step
            self._mean, self._std = to_device(self._host_mean, x.device), to_device(self._host_std, x.device)
        return (x - self._mean) / self._std

    def finish_hwc_uint8(self, x: torch.Tensor) -> torch.Tensor:
        """Views as the workers make them, (B, S, S, 3) uint8, -> normalised float (B, 3, S, S) in channels-last
        memory: one cast and two in-place passes over rows of S x 3 values, with the per-channel constants
        repeated along the row (a (1, 3, 1, 1) broadcast over channels-last memory has an inner loop of
        length 3, 4x slower on a CPU). This is the cpu data path's only per-batch work in the training
        process."""
        b, h, w, c = x.shape
        key = (w, x.device)
        if getattr(self, "_row_key", None) != key:
            # (w * c,) rows on the host, moved once per width (pinned, non-blocking on CUDA)
            mean, std = self._host_mean.view(c), self._host_std.view(c)
            mean255 = to_device((mean * 255).repeat(w), x.device)
            inv_std255 = to_device((1 / (std * 255)).repeat(w), x.device)
            self._row_key, self._row_consts = key, (mean255, inv_std255)
        mean255, inv_std255 = self._row_consts
        y = x.reshape(b * h, w * c).float().sub_(mean255).mul_(inv_std255)
        return y.view(b, h, w, c).permute(0, 3, 1, 2)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation input: uint8 (B, C, H, W) -> normalised float (B, 3, H, W), no augmentation."""
        return self.finish(to_float_rgb(images))


def to_float_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float (B, 1|3, H, W) -> float32 (B, 3, H, W) in [0, 1]."""
    x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"expected images with 1 or 3 channels, got shape {tuple(images.shape)}")
    return x.contiguous()

