"""The two views, one image at a time, with torchvision's random transforms (the reference implementation).

    >>> views = TwoViewTransform(image_size=32)              # or TwoViewTransform(augment_config(32), hue=0.0)
    >>> v1, v2 = views(pil_image_or_uint8_tensor)            # two normalised (3, 32, 32) float32 tensors

`OPS` holds one function per op of the spec (`spec.SPEC`): cfg, view -> the torchvision transforms of that op
(none when its probability in that view is 0), chained in the spec's order. torchvision draws its own random
numbers here; the other executors read theirs from `params`.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from barlowtwins.transforms.spec import AugmentConfig, augment_config, channel_values


def _interpolation(name: str) -> InterpolationMode:
    try:
        return InterpolationMode(name)
    except ValueError:
        raise ValueError(f"unknown interpolation '{name}'; use bicubic, bilinear or nearest") from None


def _maybe(cfg: AugmentConfig, op: str, view: int, transform) -> list:
    """``transform`` applied with the op's probability in ``view``: [] at 0, plain at 1, else RandomApply."""
    p = cfg.prob(op, view)
    if p == 0:
        return []
    return [transform] if p == 1 else [T.RandomApply([transform], p=p)]


def _crop(cfg: AugmentConfig, view: int) -> list:
    return [T.RandomResizedCrop(cfg.image_size, scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                                interpolation=_interpolation(cfg.interpolation), antialias=True)]


def _flip(cfg: AugmentConfig, view: int) -> list:
    return [T.RandomHorizontalFlip(cfg.hflip_p)] if cfg.hflip_p > 0 else []


def _jitter(cfg: AugmentConfig, view: int) -> list:
    return _maybe(cfg, "jitter", view, T.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))


def _gray(cfg: AugmentConfig, view: int) -> list:
    return [T.RandomGrayscale(cfg.grayscale_p)] if cfg.grayscale_p > 0 else []


def _blur(cfg: AugmentConfig, view: int) -> list:
    return _maybe(cfg, "blur", view, T.GaussianBlur(cfg.blur_kernel, sigma=cfg.blur_sigma))


def _solarize(cfg: AugmentConfig, view: int) -> list:
    p = cfg.prob("solarize", view)
    return [T.RandomSolarize(threshold=128, p=p)] if p > 0 else []


OPS = {"crop": _crop, "flip": _flip, "jitter": _jitter, "gray": _gray, "blur": _blur, "solarize": _solarize}


def view_transform(cfg: AugmentConfig, view: int, ops=OPS) -> T.Compose:
    """The whole view ``view`` (0 or 1) for one image (PIL or uint8 tensor): the ops of ``cfg``'s spec in
    order, then conversion to float and normalisation."""
    steps = [T.ToImage(), T.RGB()]
    for op in cfg.spec.ops:
        steps += ops[op.name](cfg, view)
    steps += [T.ToDtype(torch.float32, scale=True), T.Normalize(channel_values(cfg.mean), channel_values(cfg.std))]
    return T.Compose(steps)


class TwoViewTransform:
    """``image -> (view1, view2)`` with the paper's asymmetric views (torchvision, one image at a time).

    ``TwoViewTransform(image_size=32, channels=1, hue=0.0)`` builds the config with `augment_config`;
    ``TwoViewTransform(cfg)`` takes an `AugmentConfig` (further keyword arguments override its fields).
    """

    def __init__(self, cfg: AugmentConfig | int | None = None, /, *, image_size: int | None = None,
                 channels: int = 3, **overrides):
        if isinstance(cfg, int):  # TwoViewTransform(32)
            cfg, image_size = None, cfg
        if cfg is None:
            cfg = augment_config(224 if image_size is None else image_size, channels, **overrides)
        elif overrides or image_size is not None:
            extra = dict(overrides, **({} if image_size is None else {"image_size": image_size}))
            cfg = replace(cfg, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in extra.items()})
        self.cfg = cfg
        self.t1, self.t2 = view_transform(self.cfg, 0), view_transform(self.cfg, 1)

    def __call__(self, image):
        return self.t1(image), self.t2(image)
