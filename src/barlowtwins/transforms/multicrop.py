"""Multi-crop (Caron et al., 2020, SwAV): besides the two full views, a few small low-resolution crops per image.

    >>> mc = MultiCrop(count=4, size=12, scale=(0.14, 0.5))
    >>> small = mc.config(aug)                     # the AugmentConfig of the small crops (size, crop scale, blur)
    >>> p = mc.params(aug, k=0, seed=0, step=12, positions=pos, heights=h, widths=w)   # crop k's ViewParams

A small crop covers a small part of the image (``scale``: its area as a fraction of the image's) at a small size,
so it costs a fraction of a full view through the backbone while adding a learning signal per decoded image:
each small crop is compared with both full views (`models.loss.multicrop_loss`).

The random numbers of small crop ``k`` are those of uniform stream ``2 + k`` of `params.counter_uniforms`
(streams 0 and 1 are the full views): a pure function of (seed, step, global position, k), so ranks, loader
workers and a resumed run draw the crops one process draws, on every data path. Crops alternate the per-view
settings of the paper's two views (crop 0 blurs like view 1, crop 1 solarises like view 2, ...), so the small
crops see both kinds of distortion; every other setting (colour jitter, grayscale, flip) is the full views'.
With progressive resolution the small crops keep their size unless the full views are smaller still. A run's
small crops are `MIN_SIZE` px or more and smaller than its ``--image-size`` (`check_multicrop`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from barlowtwins.errors import field_error
from barlowtwins.transforms.params import ViewParams, view_params
from barlowtwins.transforms.spec import AugmentConfig, blur_kernel_for

FIRST_STREAM = 2  # uniform streams 0 and 1 are the two full views
MIN_SIZE = 8  # px: the smallest small crop, --image-size's own lower bound (smaller leaves nothing for the strides)


def default_size(image_size: int) -> int:
    """The small crops' side for full views of ``image_size``: SwAV's 96 of 224 (3/7), in multiples of 4."""
    return max(4, round(image_size * 3 / 7 / 4) * 4)


def check_multicrop(count: int, size: int, image_size: int) -> None:
    """One line (`ConfigError`) when the small crops of ``size`` px (0: `default_size`) would not be smaller than
    the full views of ``image_size`` px, or under `MIN_SIZE`; nothing to check with ``count`` 0 (off)."""
    if count <= 0:
        return
    if image_size <= MIN_SIZE:
        raise field_error(lambda n: f"{n('multicrop_count')} {count} needs {n('image_size')} above {MIN_SIZE}: the "
                                    f"small crops are at least {MIN_SIZE} px and smaller than the full views; raise "
                                    f"{n('image_size')} or set {n('multicrop_count')} 0")
    default = default_size(image_size)
    def fix(n) -> str:
        return f"use {MIN_SIZE} to {image_size - 1}" + (f", or 0 for 3/7 of {n('image_size')}" if default >= MIN_SIZE
                                                         else "")

    if size and size < MIN_SIZE:
        raise field_error(lambda n: f"{n('multicrop_size')} {size} is below {MIN_SIZE} px, too small for the network's "
                                    f"strides; {fix(n)}")
    if size >= image_size:
        raise field_error(lambda n: f"{n('multicrop_size')} {size} is not smaller than {n('image_size')} {image_size}: "
                                    f"the small crops are low-resolution views of a part of the image; {fix(n)}")
    if not size and default < MIN_SIZE:
        raise field_error(lambda n: f"multi-crop's default {n('multicrop_size')} at {n('image_size')} {image_size} is "
                                    f"{default} px (3/7 of it), below {MIN_SIZE} px; set {n('multicrop_size')} "
                                    f"{MIN_SIZE} to {image_size - 1}, or raise {n('image_size')}")


def default_scale(image_size: int) -> tuple[float, float]:
    """The small crops' area range: SwAV's (0.05, 0.14) of the image; at 64 px and below (0.14, 0.5), where a
    twentieth of a 28-px image is a 6-px patch with nothing left to recognise."""
    return (0.14, 0.5) if image_size <= 64 else (0.05, 0.14)


@dataclass(frozen=True)
class MultiCrop:
    """``count`` small crops of ``size`` pixels covering ``scale`` of the image's area (see the module docstring)."""

    count: int
    size: int
    scale: tuple[float, float]

    def __post_init__(self):
        if self.count < 1:
            raise ValueError(f"multi-crop: the crop count must be at least 1, got {self.count}")
        if self.size < 1:
            raise ValueError(f"multi-crop: the crop size must be at least 1 px, got {self.size}")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"multi-crop: the scale range must satisfy 0 < low <= high <= 1, got {self.scale}")

    @staticmethod
    def stream(k: int) -> int:
        """The uniform stream of small crop ``k``."""
        return FIRST_STREAM + k

    @staticmethod
    def settings_view(k: int) -> int:
        """The full view (0 or 1) whose per-view settings (blur, solarisation probabilities) crop ``k`` uses."""
        return k % 2

    def config(self, aug: AugmentConfig) -> AugmentConfig:
        """The small crops' config for full views ``aug``: the crop size (at most the full views'), the crop
        scale, and the blur kernel of that size when ``aug``'s was the one derived from its size."""
        size = min(self.size, aug.image_size)
        derived = aug.blur_kernel == blur_kernel_for(aug.image_size)
        blur = blur_kernel_for(size) if derived else aug.blur_kernel
        lo, hi = self.scale  # two numbers (checked in __post_init__)
        return dataclasses.replace(aug, image_size=size, crop_scale=(lo, hi), blur_kernel=blur)

    def params(self, aug: AugmentConfig, k: int, seed: int, step: int, positions, heights, widths) -> ViewParams:
        """Small crop ``k``'s parameters for the samples at global ``positions`` of ``step`` (``aug``: the
        full views' config of that step)."""
        return view_params(self.config(aug), self.settings_view(k), seed, step, positions, heights, widths,
                           stream=self.stream(k))

    def all_params(self, aug: AugmentConfig, seed: int, step: int, positions, heights, widths) -> ViewParams:
        """Every small crop's parameters, crop after crop along the sample dimension ((count * n, ...)): the
        crops of images repeated ``count`` times are then made in one pass of every op."""
        return ViewParams.cat([self.params(aug, k, seed, step, positions, heights, widths)
                               for k in range(self.count)])

    def streams(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(uniform streams, settings views) of every small crop, in crop order (for `params.sample_uniforms`)."""
        ks = range(self.count)
        return tuple(self.stream(k) for k in ks), tuple(self.settings_view(k) for k in ks)


def multicrop_from(count: int, size: int, scale, image_size: int) -> MultiCrop | None:
    """The `MultiCrop` of the config fields (count 0: off; size 0 or scale None: the defaults for the view size)."""
    if count <= 0:
        return None
    return MultiCrop(int(count), int(size) or default_size(image_size),
                     tuple(scale) if scale else default_scale(image_size))


__all__ = ["FIRST_STREAM", "MIN_SIZE", "MultiCrop", "check_multicrop", "default_scale", "default_size",
           "multicrop_from"]
