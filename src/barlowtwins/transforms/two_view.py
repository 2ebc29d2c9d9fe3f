"""The two views, one image at a time, with torchvision (the reference implementation)."""

from __future__ import annotations

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from barlowtwins.transforms.spec import AugmentConfig, augment_config, channel_values


def _interpolation(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        raise ValueError(f"unknown interpolation '{name}'; use bicubic, bilinear or nearest") from None


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
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(channel_values(cfg.mean), channel_values(cfg.std))]
    return T.Compose(steps)


class TwoViewTransform:
    """``image -> (view1, view2)`` with the paper's asymmetric views (torchvision, one image at a time)."""

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg or augment_config()
        self.t1, self.t2 = view_transform(self.cfg, 0), view_transform(self.cfg, 1)

    def __call__(self, image):
        return self.t1(image), self.t2(image)
