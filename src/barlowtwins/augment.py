"""The paper's two asymmetric views, as a documented factory with two interchangeable implementations.

    >>> cfg = augment_config(image_size=224)                # the paper's recipe (BYOL's views)
    >>> views = TwoViewTransform(cfg)                       # per sample, torchvision v2, PIL or tensor in
    >>> v1, v2 = views(pil_image)
    >>> batched = BatchViews(cfg)                           # whole batches on any device (CPU, CUDA)
    >>> v1, v2 = batched(uint8_images, generator)           # (B, C, H, W) uint8 -> two (B, 3, S, S) floats

View 1 / view 2 of the paper: random resized crop (scale 0.08-1, bicubic), horizontal flip (0.5), colour jitter
(brightness 0.4, contrast 0.4, saturation 0.2, hue 0.1; p 0.8), grayscale (p 0.2), Gaussian blur
(sigma 0.1-2; p 1.0 / 0.1), solarisation (p 0.0 / 0.2), then normalisation.

`augment_config()` adapts the defaults: at 32 px and below blur is off (a 3-pixel kernel only smears the
object away) and the crop scale starts at 0.2; for 1-channel images the colour-only steps (saturation,
hue, grayscale) are off. Every field can still be set by hand.

`BatchViews` draws the same distributions as `TwoViewTransform` (tests compare each step with torchvision's
functional ops) but on a whole batch at once: on a GPU it keeps data loading off the critical path, and for
small in-memory data sets on a CPU it is many times faster than per-image transforms.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of the two views. Pairs ``(view1, view2)`` give the asymmetric probabilities."""

    image_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    hflip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 23  # odd; about a tenth of the image size (BYOL)
    solarize_p: tuple[float, float] = (0.0, 0.2)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def view(self, i: int) -> dict:
        """Probabilities of view ``i`` (0 or 1)."""
        return {"blur_p": self.blur_p[i], "solarize_p": self.solarize_p[i]}

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def augment_config(image_size: int = 224, channels: int = 3, **overrides) -> AugmentConfig:
    """The paper's views with defaults adapted to the image size and channel count; ``overrides`` win."""
    cfg = AugmentConfig(image_size=image_size, blur_kernel=max(3, int(0.1 * image_size) // 2 * 2 + 1))
    if image_size <= 32:
        cfg = replace(cfg, blur_p=(0.0, 0.0), crop_scale=(0.2, 1.0))
    if channels == 1:
        cfg = replace(cfg, saturation=0.0, hue=0.0, grayscale_p=0.0)
    valid = {f.name for f in fields(AugmentConfig)}
    unknown = set(overrides) - valid
    if unknown:
        raise ValueError(f"unknown augmentation field(s) {sorted(unknown)}; valid: {sorted(valid)}")
    overrides = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None}
    return replace(cfg, **overrides)


def _interpolation(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        raise ValueError(f"unknown interpolation '{name}'; use bicubic, bilinear or nearest") from None


# --------------------------------------------------------------------------------------------------------
# Per-sample views with torchvision (the reference implementation; PIL images or uint8 tensors in).
# --------------------------------------------------------------------------------------------------------

def geometric_transform(cfg: AugmentConfig) -> T.Compose:
    """Random resized crop + flip, to a (3, S, S) uint8 tensor (the part that needs the full image)."""
    return T.Compose([
        T.ToImage(),
        T.RGB(),
        T.RandomResizedCrop(cfg.image_size, scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                            interpolation=_interpolation(cfg.interpolation), antialias=True),
        T.RandomHorizontalFlip(cfg.hflip_p),
    ])


def view_transform(cfg: AugmentConfig, view: int) -> T.Compose:
    """The whole view ``view`` (0 or 1) for one image: geometry, colour, blur, solarisation, normalisation."""
    p = cfg.view(view)
    steps = [geometric_transform(cfg)]
    if cfg.jitter_p > 0:
        steps.append(T.RandomApply([T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)],
                                   p=cfg.jitter_p))
    if cfg.grayscale_p > 0:
        steps.append(T.RandomGrayscale(cfg.grayscale_p))
    if p["blur_p"] > 0:
        steps.append(T.RandomApply([T.GaussianBlur(cfg.blur_kernel, sigma=cfg.blur_sigma)], p=p["blur_p"]))
    if p["solarize_p"] > 0:
        steps.append(T.RandomSolarize(threshold=128, p=p["solarize_p"]))
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(_expand(cfg.mean), _expand(cfg.std))]
    return T.Compose(steps)


class TwoViewTransform:
    """``image -> (view1, view2)`` with the paper's asymmetric views (torchvision, one image at a time)."""

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg or augment_config()
        self.t1, self.t2 = view_transform(self.cfg, 0), view_transform(self.cfg, 1)

    def __call__(self, image):
        return self.t1(image), self.t2(image)


class TwoGeometricViews:
    """``image -> (crop1, crop2)`` as uint8 tensors; `BatchViews.photometric` finishes them on device."""

    def __init__(self, cfg: AugmentConfig):
        self.t = geometric_transform(cfg)

    def __call__(self, image):
        return self.t(image), self.t(image)


def _expand(values: tuple[float, ...]) -> list[float]:
    return list(values) * 3 if len(values) == 1 else list(values)


# --------------------------------------------------------------------------------------------------------
# Batched views: the same distributions, drawn for a whole batch on any device.
# --------------------------------------------------------------------------------------------------------

def _uniform(n: int, low: float, high: float, g: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64) * (high - low) + low


class Draws:
    """Random numbers for a global batch of ``n * world`` images, of which this rank keeps its slice.

    Every rank draws the same numbers from the same generator, so W ranks augment their parts of a global
    batch exactly as one process would augment the whole of it.
    """

    def __init__(self, g: torch.Generator, n: int, rank: int = 0, world: int = 1):
        self.g, self.n, self.total = g, n, n * world
        self.lo, self.hi = rank * n, (rank + 1) * n

    def rand(self, *shape: int, dtype=torch.float32) -> torch.Tensor:
        return torch.rand(self.total, *shape, generator=self.g, dtype=dtype)[self.lo: self.hi]

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return _uniform(self.total, low, high, self.g)[self.lo: self.hi]

    def coin(self, p: float) -> torch.Tensor:
        return self.rand() < p


def sample_crop_boxes(n: int, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                      g: torch.Generator, tries: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for ``n`` images at once -> (n, 4) [top, left, h, w].

    Ten tries per image at a box of random area and aspect ratio; the first that fits wins; if none fits,
    the largest centred box with a clamped aspect ratio (the same fallback as torchvision).
    """
    area = height * width
    target = area * _uniform(n * tries, scale[0], scale[1], g).view(n, tries)
    log_r = _uniform(n * tries, math.log(ratio[0]), math.log(ratio[1]), g).view(n, tries)
    aspect = torch.exp(log_r)
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(ok.to(torch.int8), dim=1)  # index of the first fitting try (0 if none)
    any_ok = ok.any(dim=1)
    w = w.gather(1, first[:, None]).squeeze(1)
    h = h.gather(1, first[:, None]).squeeze(1)
    # Fallback: centre crop with the aspect ratio clamped to `ratio`.
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    w = torch.where(any_ok, w, torch.full_like(w, fw))
    h = torch.where(any_ok, h, torch.full_like(h, fh))
    u = torch.rand(n, 2, generator=g, dtype=torch.float64)
    top = torch.floor(u[:, 0] * (height - h + 1))
    left = torch.floor(u[:, 1] * (width - w + 1))
    top = torch.where(any_ok, top, torch.full_like(top, 0.0) + ((height - h) // 2))
    left = torch.where(any_ok, left, torch.full_like(left, 0.0) + ((width - w) // 2))
    return torch.stack([top, left, h, w], dim=1)


def resized_crop(images: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None,
                 mode: str = "bicubic") -> torch.Tensor:
    """Crop ``boxes`` ([top, left, h, w] in pixels) out of float images and resample to ``size`` x ``size``.

    One ``grid_sample`` for the whole batch; ``flip`` (bool per image) mirrors horizontally for free.
    Pixel centres map exactly: a box of the output's size is a plain crop.
    """
    b, _, height, width = images.shape
    boxes = boxes.to(images.device, torch.float32)
    top, left, h, w = boxes.unbind(1)
    theta = images.new_zeros(b, 2, 3)
    sx = w / width
    if flip is not None:
        sx = torch.where(flip.to(images.device), -sx, sx)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
    mode = {"bicubic": "bicubic", "bilinear": "bilinear", "nearest": "nearest"}[mode]
    out = F.grid_sample(images, grid, mode=mode, padding_mode="border", align_corners=False)
    return out.clamp_(0, 1) if mode == "bicubic" else out


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
    """Rotate hue by ``shift`` (fraction of a turn, per image) through HSV, as torchvision does."""
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
    hue = torch.remainder(hue + shift.view(-1, 1, 1), 1.0)
    v = maxc
    # HSV -> RGB
    i = torch.floor(hue * 6.0)
    fr = hue * 6.0 - i
    i = i.to(torch.int64) % 6
    p = (v * (1.0 - s)).clamp(0, 1)
    q = (v * (1.0 - s * fr)).clamp(0, 1)
    t = (v * (1.0 - s * (1.0 - fr))).clamp(0, 1)
    choices = [torch.stack(c, dim=1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    out = choices[0]
    for k in range(1, 6):
        out = torch.where((i == k).unsqueeze(1), choices[k], out)
    return out


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


class BatchViews:
    """The two views for a whole batch of uint8 images, on the images' device.

    ``__call__(images, generator)`` does geometry (crop + flip) and colour; ``photometric`` does only the
    colour part, for crops made per image in data-loader workers (folders of full-size images).
    Random parameters are drawn on the CPU from ``generator``, so a seed gives the same views on any device.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg or augment_config()
        self._mean = torch.tensor(_expand(self.cfg.mean)).view(1, 3, 1, 1)
        self._std = torch.tensor(_expand(self.cfg.std)).view(1, 3, 1, 1)
        if self.cfg.blur_kernel % 2 == 0 or self.cfg.blur_kernel < 1:
            raise ValueError(f"blur_kernel must be odd and positive, got {self.cfg.blur_kernel}")

    def __call__(self, images: torch.Tensor, generator: torch.Generator, rank: int = 0,
                 world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) uint8 -> two normalised (B, 3, S, S) views. Under data parallelism pass this process's
        ``rank`` and the ``world`` size: the images are this rank's slice of the global batch."""
        x = to_float_rgb(images)
        return tuple(self.photometric(self.geometric(x, generator, rank, world), generator, view, rank, world)
                     for view in (0, 1))

    def geometric(self, x: torch.Tensor, g: torch.Generator, rank: int = 0, world: int = 1) -> torch.Tensor:
        cfg = self.cfg
        n, _, height, width = x.shape
        boxes = sample_crop_boxes(n * world, height, width, cfg.crop_scale, cfg.crop_ratio, g)[rank * n: (rank + 1) * n]
        flip = Draws(g, n, rank, world).coin(cfg.hflip_p)
        return resized_crop(x, boxes, cfg.image_size, flip, cfg.interpolation)

    def photometric(self, x: torch.Tensor, g: torch.Generator, view: int, rank: int = 0, world: int = 1) -> torch.Tensor:
        """Colour jitter, grayscale, blur, solarisation and normalisation of float (B, 3, S, S) in [0, 1]."""
        cfg, p = self.cfg, self.cfg.view(view)
        if x.dtype == torch.uint8:
            x = to_float_rgb(x)
        n, dev = x.shape[0], x.device
        draw = Draws(g, n, rank, world)

        def coin(prob: float) -> torch.Tensor:
            return draw.coin(prob).to(dev).view(n, 1, 1, 1)

        if cfg.jitter_p > 0:
            apply = coin(cfg.jitter_p)
            order = torch.argsort(draw.rand(4), dim=1).to(dev)  # random op order per image
            factors = {
                0: draw.uniform(max(0.0, 1 - cfg.brightness), 1 + cfg.brightness),
                1: draw.uniform(max(0.0, 1 - cfg.contrast), 1 + cfg.contrast),
                2: draw.uniform(max(0.0, 1 - cfg.saturation), 1 + cfg.saturation),
                3: draw.uniform(-cfg.hue, cfg.hue),
            }
            ops = {0: (adjust_brightness, cfg.brightness), 1: (adjust_contrast, cfg.contrast),
                   2: (adjust_saturation, cfg.saturation), 3: (adjust_hue, cfg.hue)}
            for position in range(4):
                for op_id, (op, strength) in ops.items():
                    if strength == 0:
                        continue  # torchvision skips a zero-strength op entirely
                    f = factors[op_id].to(dev, x.dtype)
                    mask = apply & (order[:, position] == op_id).view(n, 1, 1, 1)
                    y = op(x, f) if op_id == 3 else op(x, f.view(n, 1, 1, 1))
                    x = torch.where(mask, y, x)
        if cfg.grayscale_p > 0:
            x = torch.where(coin(cfg.grayscale_p), grayscale(x).expand_as(x), x)
        if p["blur_p"] > 0:
            sigma = draw.uniform(cfg.blur_sigma[0], cfg.blur_sigma[1])
            x = torch.where(coin(p["blur_p"]), gaussian_blur(x, sigma, cfg.blur_kernel), x)
        if p["solarize_p"] > 0:
            x = torch.where(coin(p["solarize_p"]), solarize(x), x)
        return (x - self._mean.to(dev)) / self._std.to(dev)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation input: uint8 (B, C, H, W) -> normalised float (B, 3, H, W), no augmentation."""
        x = to_float_rgb(images)
        return (x - self._mean.to(x.device)) / self._std.to(x.device)


def to_float_rgb(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float (B, 1|3, H, W) -> float32 (B, 3, H, W) in [0, 1]."""
    x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    elif x.shape[1] != 3:
        raise ValueError(f"expected images with 1 or 3 channels, got shape {tuple(images.shape)}")
    return x.contiguous()

