"""The one bad-file policy of every command that reads image files outside pretraining.

An image file that cannot be read (truncated, not an image, deleted since it was listed: whatever makes
`read_image` raise `DataError`) is skipped: its sample is dropped from the batch, never replaced by another
file and never given another sample's label, so features, labels and indices stay aligned. Each skipped file
is counted once in a `BadFiles` collector (file -> short reason) and listed once at the end
(`BadFiles.summary`). ``--strict-data`` turns this into an error before any work: `refuse_unreadable` decodes
every file first (`scan_images`, as pretraining does) and raises one line naming them and the fix.

    >>> with collect_bad_files() as bad:
    ...     for images, labels, idx in ReadableBatches(ds, 256, transform=tf):
    ...         ...
    >>> bad.summary()   # "skipped 2 unreadable files: a.jpg (truncated), b.jpg (not an image)"
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import NamedTuple, cast

import torch
import torch.distributed
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, default_collate

from barlowtwins.data.images import scan_images
from barlowtwins.data.sampling import BatchStream, default_workers
from barlowtwins.errors import DataError
from barlowtwins.runtime.log import get_logger

log = get_logger(__name__)


class Unreadable(NamedTuple):
    """A sample whose file could not be read: its index in the data set, the file and a short reason."""

    # mypy refuses a NamedTuple field that shadows a tuple method (tuple.index); at run time the field wins
    index: int  # type: ignore[assignment]
    file: str
    reason: str


def short_reason(reason: str) -> str:
    """``truncated`` / ``not an image`` / ``missing`` for the common cases, else the decoder's first words."""
    low = reason.lower()
    if "missing" in low or "no such file" in low:
        return "missing"
    if "truncated" in low or "premature end" in low:
        return "truncated"
    if "cannot identify image" in low:
        return "not an image"
    if "decompressionbomb" in low or "exceeds limit" in low:
        return "too many pixels"
    return reason.split(";")[0][:80]


def file_of(dataset, i: int) -> str:
    """The file behind sample ``i`` of a data set (its index when the data set does not say)."""
    files = getattr(dataset, "files", None)
    if files is not None and 0 <= i < len(files):
        return str(files[i])
    return f"sample {i}"


class BadFiles:
    """Unreadable files met by one command: file -> short reason, each counted once, in the order met."""

    def __init__(self) -> None:
        self.files: dict[str, str] = {}

    def add(self, file: str, reason: str) -> None:
        self.files.setdefault(file, reason)

    def __len__(self) -> int:
        return len(self.files)

    def as_list(self) -> list[dict]:
        return [{"file": f, "reason": r} for f, r in self.files.items()]

    def summary(self) -> str:
        """One line naming every skipped file once ("" when none was)."""
        return summary_line(self.as_list())


def summary_line(skipped: Sequence[dict]) -> str:
    """``skipped 2 unreadable files: a.jpg (truncated), b.jpg (not an image)`` for a result's ``skipped`` list."""
    if not skipped:
        return ""
    listing = ", ".join(f"{s['file']} ({s['reason']})" for s in skipped)
    n = len(skipped)
    return (f"skipped {n} unreadable file{'s' if n != 1 else ''}: {listing}; remove or replace "
            f"{'them' if n != 1 else 'it'} (--strict-data makes this an error)")


_ACTIVE: list[BadFiles] = []
_WARNED: set[str] = set()


@contextlib.contextmanager
def collect_bad_files() -> Iterator[BadFiles]:
    """Collect the files skipped inside the block (nested collectors each see them)."""
    bad = BadFiles()
    _ACTIVE.append(bad)
    try:
        yield bad
    finally:
        _ACTIVE.remove(bad)


def collecting() -> bool:
    """Whether a command is collecting skipped files (it lists them once at its end)."""
    return bool(_ACTIVE)


def warn_uncollected(bad: BadFiles) -> None:
    """Print ``bad``'s summary as one warning line unless an enclosing collector (a command's) will list it."""
    if len(bad) and not _ACTIVE:
        log.warning(f"warning: {bad.summary()}")


def note_unreadable(file: str, reason: str) -> None:
    """Count a skipped file in every active collector; without one (library use) warn once per file."""
    if _ACTIVE:
        for bad in _ACTIVE:
            bad.add(file, reason)
    elif file not in _WARNED:
        _WARNED.add(file)
        log.warning(f"warning: skipping unreadable image {file} ({reason})")


def refuse_unreadable(files: Sequence[str], workers: int = 0) -> None:
    """``--strict-data``: decode every file before any work; one-line `DataError` naming the bad ones."""
    bad = scan_images(list(files), workers=workers)
    if bad:
        shown = ", ".join(f"{f} ({short_reason(why)})" for f, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(f"{len(bad)} of {len(files)} image files cannot be read ({shown}{more}); remove or "
                        "replace them, or run without --strict-data to skip them with a warning")


def refuse_unreadable_in(*datasets) -> None:
    """`refuse_unreadable` over the files of several data sets (in-memory ones have none), after each data set's
    own ``verify_integrity`` where it has one."""
    files: list[str] = []
    for ds in datasets:
        verify = getattr(ds, "verify_integrity", None)  # shards: cut short, or not their recorded SHA-256
        if verify is not None:
            verify()
        files += [str(f) for f in (getattr(ds, "files", None) or [])]
    if files:
        refuse_unreadable(list(dict.fromkeys(files)))


def readable(files: Sequence[str], what: str = "image files") -> list[str]:
    """The files of ``files`` that decode, in order; each other one is skipped (`note_unreadable`). A
    `DataError` when none does (a handful of named files, such as query images: decoded here first)."""
    bad = dict(scan_images(list(files)))
    for f, why in bad.items():
        note_unreadable(f, short_reason(why))
    kept = [f for f in files if f not in bad]
    if files and not kept:
        raise DataError(f"none of the {len(files)} {what} can be read ({', '.join(list(files)[:3])}); check that "
                        "they are images")
    return kept


class ItemsOrUnreadable(Dataset):
    """``dataset[i]`` as it is, or an `Unreadable` when its read raised `DataError` (caught in the worker); pair
    with `dropping_unreadable` as the loader's collate. For data sets with their own item layout (detection)."""

    def __init__(self, dataset: Dataset, files: Callable[[int], str] | None = None):
        self.dataset, self.files = dataset, files

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # map-style data sets have a length (torch's Dataset declares none)

    def __getitem__(self, i: int):
        try:
            return self.dataset[i]
        except DataError as e:
            file = self.files(i) if self.files is not None else file_of(self.dataset, i)
            return Unreadable(i, file, short_reason(getattr(e, "reason", None) or str(e)))


def dropping_unreadable(collate: Callable = default_collate) -> Callable:
    """A collate that batches the readable samples with ``collate`` (None when none is) and returns the
    `Unreadable` ones beside them: ``(batch | None, [Unreadable, ...])``."""
    def collate_fn(samples: list):
        bad = [s for s in samples if isinstance(s, Unreadable)]
        good = [s for s in samples if not isinstance(s, Unreadable)]
        return (collate(good) if good else None), bad
    return collate_fn


class SkipUnreadable(Dataset):
    """``(transform(image), label, index)`` of a map-style data set, or an `Unreadable` for a sample whose read
    raised `DataError` (caught in the worker: the error never crosses the process boundary)."""

    def __init__(self, dataset: Dataset, transform: Callable | None = None):
        self.dataset, self.transform = dataset, transform

    def __len__(self) -> int:
        return len(cast(Sized, self.dataset))  # map-style data sets have a length (torch's Dataset declares none)

    def __getitem__(self, i: int):
        try:
            image, label = self.dataset[i]
        except DataError as e:
            return Unreadable(i, file_of(self.dataset, i), short_reason(getattr(e, "reason", None) or str(e)))
        if self.transform is not None:
            image = self.transform(image)
        return image, label, i


collate_readable = dropping_unreadable(default_collate)


class ReadableBatches:
    """Per-rank ``(images, labels, indices)`` batches of a data set in its order (or shuffled by seed + epoch),
    unreadable samples dropped and counted (`note_unreadable`); ``skipped`` lists this rank's `Unreadable`
    samples of the last epoch iterated. In-memory data sets (no files to fail) go through `BatchStream`."""

    def __init__(self, dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0, rank: int = 0,
                 world_size: int = 1, transform: Callable | None = None, workers: int | None = None,
                 pin_memory: bool = False, lockstep_device: torch.device | None = None):
        self.dataset, self.batch_size, self.transform = dataset, batch_size, transform
        # Training under torch.distributed: every rank must take the same number of steps, and a batch of only
        # unreadable files gives a rank one batch fewer; with a device here the ranks agree before each batch
        # and all end the epoch when one has no batch left (the few batches that remain elsewhere are not used).
        self.lockstep = lockstep_device if world_size > 1 else None
        self.in_memory = bool(getattr(dataset, "in_memory", False))
        self.stream = BatchStream(dataset, batch_size, shuffle=shuffle, drop_last=False, seed=seed, rank=rank,
                                  world_size=world_size, transform=transform, workers=workers,
                                  pin_memory=pin_memory)
        self.sampler: DistributedSampler[int] = DistributedSampler(dataset, num_replicas=world_size, rank=rank,
                                                                   shuffle=shuffle, seed=seed, drop_last=False)
        self.workers = default_workers(world_size) if workers is None else workers
        self.pin_memory = pin_memory
        self.skipped: list[Unreadable] = []

    def __len__(self) -> int:
        return len(self.stream)

    def __iter__(self):
        return self.epoch(0)

    def epoch(self, epoch: int = 0) -> Iterator[tuple]:
        self.skipped = []
        if self.in_memory:
            yield from self.stream.epoch(epoch)
            return
        self.sampler.set_epoch(epoch)
        loader = DataLoader(SkipUnreadable(self.dataset, self.transform),
                            batch_sampler=BatchSampler(self.sampler, self.batch_size, False),
                            num_workers=self.workers, pin_memory=self.pin_memory, collate_fn=collate_readable,
                            prefetch_factor=4 if self.workers > 0 else None)
        batches = self._readable(loader)
        if self.lockstep is None:
            yield from batches
            return
        while True:
            batch = next(batches, None)
            more = torch.tensor(0 if batch is None else 1, device=self.lockstep)
            torch.distributed.all_reduce(more, op=torch.distributed.ReduceOp.MIN)
            if not int(more):
                return
            assert batch is not None  # a rank without a batch made the minimum 0: returned above
            yield batch

    def _readable(self, loader) -> Iterator[tuple]:
        seen = set()
        for batch, bad in loader:
            for s in bad:
                if s.index not in seen:  # a padded shard repeats a sample: count it once
                    seen.add(s.index)
                    self.skipped.append(s)
                note_unreadable(s.file, s.reason)
            if batch is not None:
                yield batch


def skipped_indices(skipped: Sequence[Unreadable]) -> torch.Tensor:
    return torch.as_tensor(sorted({s.index for s in skipped}), dtype=torch.int64)
