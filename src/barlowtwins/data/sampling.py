"""Batches from any data set, sharded over ranks and resumable mid-epoch.

`BatchStream(dataset, batch_size, ...)` yields ``(images, labels, indices)`` for one epoch at a time. The
order is a function of (seed, epoch) alone, so a run resumed at batch k of an epoch sees exactly the batches
it would have seen. In-memory data sets are sliced directly (no worker processes: the slicing costs
microseconds); folders of files go through a DataLoader whose workers decode and apply ``transform``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sized
from typing import Protocol, cast

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler

from barlowtwins.runtime.hardware import usable_cpus


class _InMemory(Protocol):
    """What an ``in_memory`` data set (``datasets.InMemoryImages``) has besides being one: its tensors."""

    images: torch.Tensor
    labels: torch.Tensor


class _WithIndex(Dataset):
    def __init__(self, dataset: Dataset, transform: Callable | None):
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # map-style data sets have a length (torch's Dataset declares none)

    def __getitem__(self, i: int):
        image, label = self.dataset[i]
        if self.transform is not None:
            image = self.transform(image)
        return image, label, i


class _Skip(torch.utils.data.Sampler):
    def __init__(self, sampler, skip: int):
        self.sampler, self.skip = sampler, skip

    def __iter__(self):
        it = iter(self.sampler)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(len(self.sampler) - self.skip, 0)


def default_workers(world_size: int = 1) -> int:
    return max(1, min(10, usable_cpus() // max(world_size, 1) - 1))


class GlobalBatchSampler(torch.utils.data.Sampler):
    """Epoch ``e`` is a permutation of the data set (a function of ``seed + e``) cut into global batches of
    ``batch_size * world_size``; rank r takes the r-th contiguous slice of each. So W ranks train on exactly
    the global batches one process with the whole batch would see (the incomplete last one is dropped)."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, rank: int, world_size: int):
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def num_batches(self) -> int:
        return self.n // (self.batch_size * self.world)

    def __len__(self) -> int:
        return self.num_batches() * self.batch_size

    def order(self) -> torch.Tensor:
        """The epoch's order of the whole data set, (n,) int64: every rank computes the same one."""
        if self.shuffle:
            return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        return torch.arange(self.n)

    def __iter__(self):
        order = self.order()
        g = self.batch_size * self.world
        for b in range(self.num_batches()):
            start = b * g + self.rank * self.batch_size
            yield from order[start: start + self.batch_size].tolist()


class BatchStream:
    """Per-rank batches of a data set.

    Args:
        dataset: an ``InMemoryImages`` (sliced directly) or any map-style data set of ``(image, label)``.
        batch_size: the batch on this rank.
        shuffle / drop_last: as for a DataLoader. With ``drop_last`` (pretraining) ranks take slices of
            common global batches (`GlobalBatchSampler`); without it (evaluation, classifier training) they
            take DistributedSampler shards, the last padded with repeats that `distributed.gather_by_index`
            removes again.
        seed: the shuffle order of epoch ``e`` is a function of ``seed + e``.
        rank / world_size: this process's shard.
        transform: per-sample transform for file data sets (run in the workers).
        workers: DataLoader worker processes for file data sets.
    """

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool, drop_last: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, transform: Callable | None = None, workers: int | None = None,
                 pin_memory: bool = False):
        self.dataset = dataset
        self.batch_size = batch_size
        self.in_memory = bool(getattr(dataset, "in_memory", False))
        self.sampler: GlobalBatchSampler | DistributedSampler[int]
        if drop_last:
            self.sampler = GlobalBatchSampler(len(cast(Sized, dataset)), batch_size, shuffle=shuffle, seed=seed,
                                              rank=rank, world_size=world_size)
        else:
            self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                              seed=seed, drop_last=False)
        self.drop_last = drop_last
        self.transform = transform
        self.workers = default_workers(world_size) if workers is None else workers
        self.pin_memory = pin_memory

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        """Batches of ``epoch``, beginning at batch ``start`` (for a resumed run)."""
        self.sampler.set_epoch(epoch)
        if self.in_memory:
            order = torch.as_tensor(list(self.sampler), dtype=torch.int64)
            for b in range(start, len(self)):
                idx = order[b * self.batch_size: (b + 1) * self.batch_size]
                data = cast(_InMemory, self.dataset)  # an in_memory data set holds its images and labels as tensors
                images = data.images[idx]
                if self.transform is not None:
                    images = self.transform(images)
                yield images, data.labels[idx], idx
            return
        batches = BatchSampler(_Skip(self.sampler, start * self.batch_size), self.batch_size, self.drop_last)
        loader = DataLoader(_WithIndex(self.dataset, self.transform), batch_sampler=batches,
                            num_workers=self.workers, pin_memory=self.pin_memory,
                            persistent_workers=False, prefetch_factor=4 if self.workers > 0 else None)
        yield from loader
