"""`DataPath`: the contract of every pretraining data path, and what all paths share.

Batches of one rank by epoch (`DataPath.epoch`), and their normalised views on the device (`DataPath.views`,
`DataPath.all_views` with multi-crop), with progressive resolution (``sizes``) and the notes of unreadable files
(``skipped``). The paths: `data.paths.memory`, `data.paths.cpu`, `data.paths.device`; `data.pipeline` chooses
and builds one.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from barlowtwins.data.bad_files import collecting, note_unreadable, short_reason
from barlowtwins.data.sampling import default_workers
from barlowtwins.runtime.log import get_logger
from barlowtwins.transforms.multicrop import MultiCrop
from barlowtwins.transforms.progressive import ViewSizes
from barlowtwins.transforms.spec import AugmentConfig
from barlowtwins.transforms.tensor import BatchViews

log = get_logger(__name__)


class DataPath:
    """Batches of one rank and the views of each batch (see `data.pipeline`'s docstring)."""

    kind = ""

    def __init__(self, dataset, aug: AugmentConfig, *, batch_size: int, seed: int, rank: int, world: int,
                 device: torch.device, workers: int | None, strict: bool):
        self.dataset, self.aug, self.batch_size, self.seed = dataset, aug, batch_size, seed
        self.rank, self.world, self.device, self.strict = rank, world, device, strict
        self.workers = default_workers(world) if workers is None else workers
        self.batch_views = BatchViews(aug)
        self.skipped: dict[str, str] = {}  # unreadable file -> reason, as seen by this process
        self.sizes: ViewSizes | None = None  # progressive resolution, when on (`build_pipeline`)
        self.multicrop: MultiCrop | None = None  # small crops besides the two views, when on (`build_pipeline`)
        self._views_by_size: dict[int, BatchViews] = {}
        self._crop_views: dict[int, tuple[AugmentConfig, BatchViews]] = {}

    def aug_at(self, step: int) -> AugmentConfig:
        """The augmentation config of ``step``'s views: ``aug``, or its smaller-size form early in a run with
        progressive resolution."""
        return self.aug if self.sizes is None else self.sizes.at(step)

    def image_size(self, step: int) -> int:
        """The side of ``step``'s views in pixels."""
        return self.aug_at(step).image_size

    def _batch_views_at(self, step: int) -> BatchViews:
        aug = self.aug_at(step)
        if aug is self.aug:
            return self.batch_views
        views = self._views_by_size.get(aug.image_size)
        if views is None:
            views = self._views_by_size[aug.image_size] = BatchViews(aug)
        return views

    def _crop_views_at(self, step: int) -> tuple[AugmentConfig, BatchViews]:
        """The small crops' config and view maker at ``step`` (multi-crop on), one per full-view size."""
        aug = self.aug_at(step)
        entry = self._crop_views.get(aug.image_size)
        if entry is None:
            assert self.multicrop is not None  # only the crops of multi-crop ask (``crops`` in `_views`)
            small = self.multicrop.config(aug)
            entry = self._crop_views[aug.image_size] = (small, BatchViews(small))
        return entry

    @property
    def num_views(self) -> int:
        """Views per sample that `all_views` returns: 2, plus the small crops of multi-crop."""
        return 2 + (self.multicrop.count if self.multicrop is not None else 0)

    def __len__(self) -> int:
        """Steps per epoch (incomplete global batches are dropped)."""
        return len(self.dataset) // (self.batch_size * self.world)

    def positions(self, n: int) -> np.ndarray:
        """Global positions of this rank's ``n`` samples: rank r holds slice r of the global batch."""
        return self.rank * n + np.arange(n)

    def metrics(self) -> dict:
        return {"skipped_files": len(self.skipped)}

    def batch_bytes(self) -> int | None:
        """Bytes of one batch as a loader worker hands it over (in shared memory); None when not known."""
        return None

    def _note_skips(self, skipped) -> None:
        for entry in skipped:
            path, _, reason = entry.partition("\t")
            if path and path not in self.skipped:
                self.skipped[path] = reason
                if collecting():  # a command lists every bad file once, at its end
                    note_unreadable(path, short_reason(reason))
                else:
                    log.warning(f"warning: skipping unreadable image {path} ({reason}); the next readable file is used "
                                "in its place (--strict-data makes this an error)")

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        raise NotImplementedError

    def views(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two full views of ``batch`` at ``step``: normalised (B, 3, S, S) float32 on the device."""
        first, second = self._views(batch, step, crops=False)  # without the small crops: the two views
        return first, second

    def all_views(self, batch, step: int) -> tuple[torch.Tensor, ...]:
        """The two full views, then multi-crop's small crops (``num_views`` tensors; two when multi-crop is off)."""
        return self._views(batch, step, crops=self.multicrop is not None)

    def _views(self, batch, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def close(self) -> None:
        """Release loader workers, if any (a later epoch() starts new ones)."""
