"""The two views, one image at a time, with torchvision's random transforms (the reference implementation).

    >>> views = TwoViewTransform(image_size=32)              # the same as TwoViewTransform(augment_config(32))
    >>> v1, v2 = views(pil_image_or_uint8_tensor)            # two normalised (3, 32, 32) float32 tensors

`OPS` holds one function per op of the spec (`spec.SPEC`): cfg, view -> the torchvision transforms of that op
(none when its probability in that view is 0), chained in the spec's order. torchvision draws its own random
numbers here; the other executors read theirs from `params`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

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

    One way to ask for a view size: ``TwoViewTransform(image_size=32, channels=1, hue=0.0)`` builds the config
    with `augment_config` (its defaults adapted to the size and channels: at 32 px no blur, crops from 0.2), the
    same views as ``TwoViewTransform(augment_config(32, 1, hue=0.0))``. ``TwoViewTransform(cfg)`` takes an
    `AugmentConfig` as it is, its size included; further keyword arguments override its fields (``hue=0.0``).
    A config with another ``image_size`` or ``channels`` is refused (`ValueError`): the defaults it derived from
    its own size would stay, so ask `augment_config` for the size.
    """

    def __init__(self, cfg: AugmentConfig | int | None = None, /, *, image_size: int | None = None,
                 channels: int | None = None, **overrides):
        if isinstance(cfg, int):  # TwoViewTransform(32)
            if image_size is not None and image_size != cfg:
                raise ValueError(f"TwoViewTransform({cfg}, image_size={image_size}): two view sizes; give one")
            cfg, image_size = None, cfg
        if cfg is None:
            cfg = augment_config(224 if image_size is None else image_size, 3 if channels is None else channels,
                                 **overrides)
        else:
            if image_size is not None and image_size != cfg.image_size:
                raise ValueError(f"TwoViewTransform(cfg, image_size={image_size}): the config is for "
                                 f"{cfg.image_size}-px views, and its blur and crop defaults were derived for that "
                                 f"size; pass augment_config({image_size}, ...) (or TwoViewTransform(image_size="
                                 f"{image_size}, ...)) instead")
            if channels is not None:
                raise ValueError("TwoViewTransform(cfg, channels=...): a config carries its channel defaults; pass "
                                 f"augment_config({cfg.image_size}, {channels}, ...) instead")
            if overrides:
                changes: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()}
                cfg = replace(cfg, **changes)
        self.cfg = cfg
        self.t1, self.t2 = view_transform(self.cfg, 0), view_transform(self.cfg, 1)

    def __call__(self, image):
        return self.t1(image), self.t2(image)
