"""The ``memory`` data path: data sets held as one uint8 tensor (Fashion-MNIST, CIFAR, STL-10) are sliced per
batch and augmented batched on the device (`transforms.tensor.BatchViews`). Used for in-memory data whatever
``--data-path`` says."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from barlowtwins.data.paths.base import DataPath
from barlowtwins.data.sampling import BatchStream
from barlowtwins.runtime.hardware import to_device
from barlowtwins.transforms.params import view_params
from barlowtwins.transforms.tensor import to_float_rgb


class MemoryPath(DataPath):
    """In-memory data: batches sliced from the uint8 tensor, both views made batched on the device."""

    kind = "memory"

    def __init__(self, dataset, aug, **kw):
        super().__init__(dataset, aug, **kw)
        self.stream = BatchStream(dataset, self.batch_size, shuffle=True, drop_last=True, seed=self.seed,
                                  rank=self.rank, world_size=self.world, workers=0)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        yield from self.stream.epoch(epoch, start)

    def _views(self, images: torch.Tensor, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        n, _, h, w = images.shape
        pos = self.positions(n)
        aug = self.aug_at(step)
        x = to_float_rgb(to_device(images, self.device))  # (B, 3, H, W) in [0, 1], once for every view
        full = self._batch_views_at(step)
        out = [full.view(x, view_params(aug, v, self.seed, step, pos, h, w)) for v in (0, 1)]
        if crops:  # every small crop in one pass of each op: (M * B, 3, s, s), then one tensor per crop
            assert self.multicrop is not None  # crops only with multi-crop on (`all_views`)
            _, small = self._crop_views_at(step)
            m = self.multicrop.count
            p = self.multicrop.all_params(aug, self.seed, step, pos, h, w)
            out += small.view(x.repeat(m, 1, 1, 1), p).chunk(m)
        return tuple(out)
