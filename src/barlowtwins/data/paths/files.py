"""What the two data paths for files (`data.paths.cpu`, `data.paths.device`) share: `_FilePath` (the file list,
the ``--strict-data`` check, the batch order, one loader whose workers live from epoch to epoch), the
``(index, step, position)`` keys its sampler hands the workers (`_StepBatches`), the worker-side base data set
with the replacement rule for unreadable files (`_FileSamples`), and the loader's prefetch sized to the shared
memory it hands batches over in (`prefetch_for_shm`).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

from torch.utils.data import DataLoader, Dataset, Sampler

from barlowtwins.data.images import first_decodable, scan_images
from barlowtwins.data.paths.base import DataPath
from barlowtwins.data.sampling import GlobalBatchSampler
from barlowtwins.errors import DataError
from barlowtwins.runtime.distributed import local_world_size
from barlowtwins.runtime.log import get_logger
from barlowtwins.transforms.progressive import ViewSizes
from barlowtwins.transforms.spec import AugmentConfig

log = get_logger(__name__)

MAX_REPLACEMENTS = 32  # files tried after an unreadable one before giving up

PREFETCH = 4  # batches each loader worker prepares ahead
SHM = "/dev/shm"


def prefetch_for_shm(batch_bytes: int | None, workers: int, shm: str = SHM,
                     local_ranks: int | None = None) -> int | None:
    """Batches each of ``workers`` loader workers may prepare ahead: `PREFETCH`, fewer when the shared memory
    they hand batches over in (``/dev/shm``; a Docker container has 64 MB unless told otherwise) cannot hold
    ``workers x PREFETCH`` batches of ``batch_bytes`` (this rank's batch) for each of the ``local_ranks``
    training processes of this node, which share it (`local_world_size` by default); it would end in a bus
    error mid-run. A one-line `DataError` naming the fix when it cannot hold even one batch per worker. None
    without workers (no shared memory is used)."""
    if workers <= 0:
        return None
    if not batch_bytes:
        return PREFETCH
    try:
        free = shutil.disk_usage(shm).free
    except OSError:  # no /dev/shm (macOS, Windows): PyTorch shares memory by other means
        return PREFETCH
    ranks = max(1, local_world_size() if local_ranks is None else local_ranks)
    holders = workers * ranks  # every local rank's workers hold their batches in the same /dev/shm
    fit = int(0.8 * free) // (batch_bytes * holders)
    if fit >= PREFETCH:
        return PREFETCH
    mb = lambda n: f"{n / 2**20:.0f} MB"  # noqa: E731
    who = f"{workers} loader workers" + (f" x {ranks} ranks on this node" if ranks > 1 else "")
    if fit >= 1:
        log.warning(f"warning: {shm} has {mb(free)} free for {who}: the loader prepares {fit} batch(es) ahead per "
                    f"worker instead of {PREFETCH}; give it more shared memory (docker run --shm-size=2g) for full "
                    "speed")
        return fit
    raise DataError(f"{shm} has {mb(free)} free, but {who} need {mb(batch_bytes * holders)} for one batch each; "
                    "give the container more shared memory (docker run --shm-size=2g), or lower --workers or "
                    "--batch-size")


class _StepBatches(Sampler):
    """Lists of ``(index, step, position)`` for the batches of one epoch from batch ``start``: the keys the
    workers need to draw each sample's views without any shared state."""

    def __init__(self, order: GlobalBatchSampler, batch_size: int, rank: int, epoch: int, start: int):
        self.order, self.batch_size, self.rank, self.epoch, self.start = order, batch_size, rank, epoch, start

    def __iter__(self):
        epoch, start = self.epoch, self.start  # fixed for this pass, whatever the next epoch sets
        self.order.set_epoch(epoch)
        idx = list(self.order)
        steps = self.order.num_batches()
        for b in range(start, steps):
            step = epoch * steps + b
            yield [(i, step, self.rank * self.batch_size + j)
                   for j, i in enumerate(idx[b * self.batch_size: (b + 1) * self.batch_size])]

    def __len__(self) -> int:
        return max(self.order.num_batches() - self.start, 0)


class _FileSamples(Dataset):
    """Base of the worker-side data sets: a file list, with the replacement rule for unreadable files."""

    def __init__(self, files: list[str], aug: AugmentConfig, seed: int, strict: bool,
                 sizes: ViewSizes | None = None):
        self.files, self.aug, self.seed, self.strict, self.sizes = files, aug, seed, strict, sizes

    def __len__(self) -> int:
        return len(self.files)

    def read_first_readable(self, i: int, read):
        """``read(path)`` of file i, else of the next readable file; returns (result, skip note or "")."""
        return self.read_first_readable_at(i, lambda j: read(self.files[j]))

    def read_first_readable_at(self, i: int, read_at):
        """`read_first_readable` with ``read_at(index)``: the index of the file tried, not its path."""
        note = ""
        for k in range(min(MAX_REPLACEMENTS, len(self.files))):
            j = (i + k) % len(self.files)
            try:
                return read_at(j), note
            except DataError as e:
                if self.strict:
                    raise
                note = note or f"{self.files[j]}\t{getattr(e, 'reason', e)}"
        raise DataError(f"{MAX_REPLACEMENTS} image files in a row from {self.files[i]} cannot be decoded; "
                        "check the data folder (run with --strict-data to list every unreadable file)")


class _FilePath(DataPath):
    pin = True  # the loader pins its batches for asynchronous copies to CUDA
    # set by the first `_batches` (declared only: ``getattr(self, "_data_loader", None)`` until then)
    _data_loader: DataLoader | None
    _sampler: _StepBatches
    _generation: int

    def __init__(self, dataset, aug, **kw):
        super().__init__(dataset, aug, **kw)
        self.files = list(dataset.files)
        self.labels = dataset.labels
        if not self.strict:
            first_decodable(self.files, getattr(dataset, "name", "") or "the data set")  # stops at the first good one
        else:
            verify = getattr(dataset, "verify_integrity", None)  # shards: cut short, or not their recorded SHA-256
            if verify is not None:
                verify()
            bad = scan_images(self.files, workers=self.workers)
            if bad:
                listing = "; ".join(f for f, _ in bad[:3])
                missing = sum("missing (deleted?)" in why for _, why in bad)
                what = ("are missing (deleted since they were listed?)" if missing == len(bad) else
                        "cannot be decoded" if not missing else f"cannot be read ({missing} missing, "
                        f"{len(bad) - missing} undecodable)")
                raise DataError(f"{len(bad)} of {len(self.files)} image files {what} ({listing}"
                                f"{' ...' if len(bad) > 3 else ''}); remove or replace them, or run without "
                                "--strict-data to skip them with a warning")
        # a data set with an order of its own (shards: read a few at a time) gives it; any other is shuffled whole
        make_order = getattr(dataset, "batch_order", None)
        self.order = (make_order(self.batch_size, seed=self.seed, rank=self.rank, world_size=self.world)
                      if make_order is not None else
                      GlobalBatchSampler(len(self.files), self.batch_size, shuffle=True, seed=self.seed,
                                         rank=self.rank, world_size=self.world))

    def _batches(self, make_samples, epoch: int, start: int, collate=None) -> Iterator:
        """The loader's batches for one epoch from batch ``start``. One DataLoader per path, its workers kept
        from epoch to epoch (a new epoch only re-keys the sampler): no re-fork of the training process (and
        of everything it holds) at every epoch boundary. Starting an epoch ends the previous one: a generator
        of an earlier epoch that is used again raises instead of giving another epoch's batches."""
        loader = getattr(self, "_data_loader", None)
        if loader is None:
            self._sampler = _StepBatches(self.order, self.batch_size, self.rank, epoch, start)
            loader = self._data_loader = DataLoader(
                make_samples(), batch_sampler=self._sampler, num_workers=self.workers,
                pin_memory=self.device.type == "cuda" and self.pin, collate_fn=collate,
                prefetch_factor=prefetch_for_shm(self.batch_bytes(), self.workers),
                persistent_workers=self.workers > 0,
                worker_init_fn=_ignore_stop_signals if self.workers > 0 else None)
        self._generation = getattr(self, "_generation", 0) + 1
        generation = self._generation
        self._sampler.epoch, self._sampler.start = epoch, start
        for batch in iter(loader):
            yield batch
            if self._generation != generation:
                raise RuntimeError(f"epoch {epoch}'s batches were asked for after a later epoch() started")

    def close(self) -> None:
        """Stop the loader workers now (they also stop with the process); the next epoch() starts new ones."""
        loader, self._data_loader = getattr(self, "_data_loader", None), None
        iterator = getattr(loader, "_iterator", None)
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave stop signals to the training process: a SIGTERM/SIGINT/SIGUSR1 sent to the whole
    process group (SLURM's scancel and time limit, systemd, Ctrl-C) would otherwise kill a worker, and the
    loader would fail the run with a traceback instead of the trainer's clean stop. The workers still end
    when the loader shuts down or the training process dies."""
    import signal

    for name in ("SIGTERM", "SIGINT", "SIGUSR1"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
