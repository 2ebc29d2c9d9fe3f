"""Progressive resolution: views small early in a run, full size late (as in FFCV's ResNet recipes).

    >>> sizes = ViewSizes(aug, start=16, ramp_epochs=4, steps_per_epoch=468)   # aug.image_size: the end size
    >>> sizes.size(0), sizes.size(468 * 2), sizes.size(468 * 10)              # (16, 20, 28) for aug at 28 px
    >>> sizes.at(step)                                                        # the AugmentConfig of that step

The size is a pure function of the step: it grows linearly with the epoch (``start`` at epoch 0, the full size
from ``ramp_epochs`` on), changes only at epoch boundaries and is rounded down to a multiple of 8 (4 at 64 px
and below; the start is one such multiple, `check_progressive_start`), so a run sees a few sizes, each for whole
epochs, and a resumed run the sizes of the uninterrupted one. Only the view size changes (and the blur kernel
derived from it, when it was not set): the random draws of a sample are those of the full-size run, so the crops
cover the same image regions at every size.
"""

from __future__ import annotations

import dataclasses

from barlowtwins.errors import field_error
from barlowtwins.transforms.spec import AugmentConfig, blur_kernel_for


def check_progressive_start(start: int, image_size: int) -> None:
    """One line (`ConfigError`) when progressive resolution would start above the image size, or at a size that
    is not a multiple of the step of its sizes (`size_multiple`; ``start`` 0: off, always valid)."""
    if start > image_size:
        raise field_error(lambda n: f"{n('progressive_start')} {start} is above {n('image_size')} {image_size}: "
                                    "progressive resolution starts smaller and ends at the image size")
    m = size_multiple(image_size)
    if start and start != image_size and start % m:
        below, above = start // m * m, start // m * m + m
        nearest = " or ".join(str(s) for s in (below, above) if 0 < s < image_size) or "0 (off)"
        other = "8 px above 64" if m == 4 else "4 px at 64 and below"
        raise field_error(lambda n: f"{n('progressive_start')} {start} is not a multiple of {m}: the view sizes grow "
                                    f"in steps of {m} px at {n('image_size')} {image_size} ({other}); use {nearest}")


def check_progressive_epochs(start: int, epochs: float) -> None:
    """One line (`ConfigError`) when only one of the two settings of progressive resolution is given: a start
    size without epochs to grow over, or epochs without a start size, would be silently ignored."""
    if start and not epochs:
        raise field_error(lambda n: f"{n('progressive_start')} {start} needs {n('progressive_epochs')}, the epochs "
                                    f"over which the views grow to {n('image_size')}; set both, or "
                                    f"{n('progressive_start')} 0 to train at the full size")
    if epochs and not start:
        raise field_error(lambda n: f"{n('progressive_epochs')} {epochs:g} needs {n('progressive_start')}, the view "
                                    f"size of the first epoch; set both, or {n('progressive_epochs')} 0 to train at "
                                    "the full size")


def size_multiple(size: int) -> int:
    """The granularity of the sizes on the way to ``size``: 8 px, 4 px for small images (64 px and below)."""
    return 4 if size <= 64 else 8


class ViewSizes:
    """The view size (and its `AugmentConfig`) at each step of a run with progressive resolution; picklable,
    so loader workers compute it themselves."""

    def __init__(self, aug: AugmentConfig, start: int, ramp_epochs: float, steps_per_epoch: int):
        end = aug.image_size
        if not 0 < start <= end:
            raise ValueError(f"progressive resolution: the start size must be in 1..{end} (the image size), "
                             f"got {start}")
        self.aug, self.start, self.end = aug, int(start), int(end)
        self.ramp_epochs, self.steps_per_epoch = float(ramp_epochs), max(1, int(steps_per_epoch))
        # the blur kernel follows the size only when it was the one derived from the full size
        self._derived_blur = aug.blur_kernel == blur_kernel_for(end)
        self._configs: dict[int, AugmentConfig] = {}

    def size(self, step: int) -> int:
        epoch = step // self.steps_per_epoch
        if self.ramp_epochs <= 0 or epoch >= self.ramp_epochs:
            return self.end
        raw = self.start + (self.end - self.start) * epoch / self.ramp_epochs
        m = size_multiple(self.end)
        return max(min(self.start, self.end), min(self.end, int(raw) // m * m))

    def at(self, step: int) -> AugmentConfig:
        """The augmentation config of ``step``'s views (the full config from the end of the ramp on)."""
        s = self.size(step)
        if s == self.end:
            return self.aug
        cfg = self._configs.get(s)
        if cfg is None:
            blur = blur_kernel_for(s) if self._derived_blur else self.aug.blur_kernel
            cfg = self._configs[s] = dataclasses.replace(self.aug, image_size=s, blur_kernel=blur)
        return cfg

    def sizes(self) -> list[int]:
        """Every size of the run, in order."""
        out: list[int] = []
        epoch = 0
        while True:
            s = self.size(epoch * self.steps_per_epoch)
            if not out or out[-1] != s:
                out.append(s)
            if s == self.end:
                return out
            epoch += 1


__all__ = ["ViewSizes", "check_progressive_epochs", "check_progressive_start", "size_multiple"]
