"""The pretraining data path, from a data set to the two normalised views on the training device.

    >>> pipe = build_pipeline(dataset, aug, batch_size=64, seed=0, rank=0, world=1, device=torch.device("cpu"),
    ...                       data_path="auto")
    >>> for batch, labels, indices in pipe.epoch(epoch, start=first_batch):
    ...     x1, x2 = pipe.views(batch, step)                     # (B, 3, S, S) float32 each, on the device
    ...     step += 1

With multi-crop (`build_pipeline(..., multicrop=MultiCrop(...))`, `transforms.multicrop`) ``all_views(batch, step)``
returns the two full views and then the small crops, (B, 3, s, s) each, made on the same path as the full views.

Three paths, one contract (`DataPath`):

- ``memory``: data sets held as one uint8 tensor (Fashion-MNIST, CIFAR, STL-10) are sliced per batch and
  augmented batched on the device (`transforms.tensor.BatchViews`). Used for in-memory data whatever
  ``data_path`` says.
- ``cpu`` (the default for folders without a GPU): each loader worker reads a file once and makes both views
  whole with PIL (`transforms.pil`), so every core works; the device only normalises.
- ``device`` (the default for folders with a GPU): workers read bytes; JPEGs are decoded in batches on the
  device, cropped, resized and coloured there (`transforms.device`, its `OPS`). A batch's bytes travel as one
  uint8 tensor with offsets (not pinned: the decoder reads it on the host); the images the workers decoded are
  pinned by the loader and copied to the device asynchronously. JPEGs nvJPEG cannot decode (CMYK, 12-bit,
  lossless, arithmetic-coded), over PIL's pixel cap or without their end-of-image marker (truncated: nvJPEG may
  return garbage for them without an error), and other formats, are decoded by PIL in the workers; a JPEG the
  device decoder still refuses is decoded by PIL here, and remembered: the workers decode it with PIL for the
  rest of the run (one warning line names such files). The decoder is checked against PIL once per process (a
  torchvision without it: the cpu path, with one warning line); device errors (out of memory) stop the run.

On every path the parameters of a view are `transforms.params.view_params` of (seed, step, position in the
global batch, view; small crop k is view stream 2 + k), so ranks draw different crops for their samples, W
processes draw the views one process draws for the whole global batch, and a run resumed at batch k of an epoch
draws the views of the uninterrupted run.

A file that cannot be decoded is replaced, deterministically, by the next readable file of the data set, with
one warning line naming it (once per file and process); ``skipped`` counts them. With ``strict`` every file
is decoded once before training, and any unreadable one is an error.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from barlowtwins.data.bad_files import collecting, note_unreadable, short_reason
from barlowtwins.data.datasets import is_in_memory
from barlowtwins.data.images import (
    SampleRef,
    first_decodable,
    has_jpeg_end,
    is_jpeg,
    jpeg_markers,
    read_file_bytes,
    read_image,
    scan_images,
)
from barlowtwins.data.sampling import BatchStream, GlobalBatchSampler, default_workers
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.runtime.distributed import local_world_size
from barlowtwins.runtime.hardware import to_device
from barlowtwins.runtime.registry import Registry
from barlowtwins.transforms.device import OPS as DEVICE_OPS
from barlowtwins.transforms.device import check_device_decoder, decode_batch
from barlowtwins.transforms.hue_shift import tables
from barlowtwins.transforms.multicrop import MultiCrop, multicrop_from
from barlowtwins.transforms.params import sample_uniforms, sample_views_from, view_params
from barlowtwins.transforms.pil import draft_size, views_of
from barlowtwins.transforms.progressive import ViewSizes, check_progressive_start
from barlowtwins.transforms.spec import AugmentConfig, augment_config, run_ops
from barlowtwins.transforms.tensor import BatchViews, to_float_rgb

AUTO = "auto"  # the data-path name resolved per device by `choose_data_path`
MAX_REPLACEMENTS = 32  # files tried after an unreadable one before giving up


@dataclass(frozen=True)
class DataPathSpec:
    """A data path for files by name: ``cls`` is its `DataPath` class; ``description`` is one line for
    ``--help``. In-memory data sets always take `MemoryPath`, whatever path is named."""

    name: str
    cls: type
    description: str


DATA_PATHS: Registry[DataPathSpec] = Registry("--data-path")


def register_data_path(spec: DataPathSpec) -> DataPathSpec:
    """Add (or replace) a data path for image folders by name (``--data-path`` offers every entry)."""
    if spec.name == AUTO:
        raise ValueError(f"'{AUTO}' is not a data path but the choice between them")
    return DATA_PATHS.register(spec)


def data_path_choices() -> tuple[str, ...]:
    """The values ``--data-path`` accepts: ``auto`` and every registered path."""
    return (AUTO, *DATA_PATHS)


def data_path_help() -> str:
    """One line per choice of ``--data-path``, for help texts."""
    return "; ".join([f"{AUTO}: device on CUDA, else cpu"] + [f"{n}: {s.description}" for n, s in DATA_PATHS.items()])


def choose_data_path(data_path: str, dataset, device: torch.device) -> str:
    """``memory`` for in-memory data; for files a registered path (``auto``: device on CUDA, else cpu)."""
    if data_path not in data_path_choices():
        raise ConfigError(f"unknown --data-path '{data_path}'; choose {', '.join(data_path_choices())}")
    if is_in_memory(dataset):
        return MemoryPath.kind
    if data_path == AUTO:
        return "device" if device.type == "cuda" else "cpu"
    return data_path


def build_pipeline(dataset, aug: AugmentConfig, *, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                   device: torch.device | str = "cpu", data_path: str = "auto", workers: int | None = None,
                   strict: bool = False, progressive: tuple[int, float] | None = None,
                   multicrop: MultiCrop | None = None) -> "DataPath":
    """The pretraining data path for ``dataset``: ``batch_size`` is per rank; see the module docstring.
    ``progressive=(start size, ramp epochs)``: progressive resolution (`transforms.progressive`);
    ``multicrop``: small crops besides the two views (`transforms.multicrop`; `DataPath.all_views`)."""
    device = torch.device(device)
    kind = choose_data_path(data_path, dataset, device)
    if kind == DevicePath.kind and (why := check_device_decoder(device)) is not None:
        print(f"warning: {why}; using --data-path cpu instead", file=sys.stderr, flush=True)
        kind = CpuPath.kind
    cls = MemoryPath if kind == MemoryPath.kind else DATA_PATHS[kind].cls
    path = cls(dataset, aug, batch_size=batch_size, seed=seed, rank=rank, world=world, device=device,
               workers=workers, strict=strict)
    path.multicrop = multicrop
    if progressive is not None:
        check_progressive_start(progressive[0], aug.image_size)
    if progressive is not None and progressive[0] and progressive[0] < aug.image_size:
        path.sizes = ViewSizes(aug, progressive[0], progressive[1], len(path))
    return path


def pipeline_from_config(cfg, dataset, rank: int, world: int, device: torch.device) -> "DataPath":
    """`build_pipeline` with the settings of a `training.config.PretrainConfig`."""
    aug = augment_config(cfg.image_size, getattr(dataset, "channels", 3), **cfg.augment_overrides())
    return build_pipeline(dataset, aug, batch_size=cfg.batch_size // world, seed=cfg.seed, rank=rank, world=world,
                          device=device, data_path=getattr(cfg, "data_path", "auto"), workers=cfg.workers,
                          strict=getattr(cfg, "strict_data", False),
                          progressive=(getattr(cfg, "progressive_start", 0), getattr(cfg, "progressive_epochs", 0)),
                          multicrop=multicrop_from(getattr(cfg, "multicrop_count", 0), getattr(cfg, "multicrop_size", 0),
                                                   getattr(cfg, "multicrop_scale", None), cfg.image_size))


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
        print(f"warning: {shm} has {mb(free)} free for {who}: the loader prepares {fit} batch(es) ahead per worker "
              f"instead of {PREFETCH}; give it more shared memory (docker run --shm-size=2g) for full speed",
              file=sys.stderr, flush=True)
        return fit
    raise DataError(f"{shm} has {mb(free)} free, but {who} need {mb(batch_bytes * holders)} for one batch each; "
                    "give the container more shared memory (docker run --shm-size=2g), or lower --workers or "
                    "--batch-size")


class DataPath:
    """Batches of one rank and the views of each batch (see the module docstring)."""

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
                    print(f"warning: skipping unreadable image {path} ({reason}); the next readable file is used "
                          "in its place (--strict-data makes this an error)", file=sys.stderr, flush=True)

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        raise NotImplementedError

    def views(self, batch, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The two full views of ``batch`` at ``step``: normalised (B, 3, S, S) float32 on the device."""
        return self._views(batch, step, crops=False)

    def all_views(self, batch, step: int) -> tuple[torch.Tensor, ...]:
        """The two full views, then multi-crop's small crops (``num_views`` tensors; two when multi-crop is off)."""
        return self._views(batch, step, crops=self.multicrop is not None)

    def _views(self, batch, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def close(self) -> None:
        """Release loader workers, if any (a later epoch() starts new ones)."""


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
            _, small = self._crop_views_at(step)
            m = self.multicrop.count
            p = self.multicrop.all_params(aug, self.seed, step, pos, h, w)
            out += small.view(x.repeat(m, 1, 1, 1), p).chunk(m)
        return tuple(out)


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


class _PilViews(_FileSamples):
    """Worker side of the cpu path: ``(index, step, position)`` -> both views as (S, S, 3) uint8 (then the small
    crops of multi-crop, (s, s, 3) each). A batch's keys come to `__getitems__` together (one step): its random
    numbers are drawn in one numpy pass."""

    def __init__(self, files: list[str], aug: AugmentConfig, seed: int, strict: bool,
                 sizes: ViewSizes | None = None, multicrop: MultiCrop | None = None):
        super().__init__(files, aug, seed, strict, sizes)
        self.multicrop = multicrop

    def __getitem__(self, key):
        return self.__getitems__([key])[0]

    def __getitems__(self, keys):
        step = keys[0][1]
        if any(k[1] != step for k in keys):
            raise ValueError("the keys of one batch belong to one step")
        aug = self.aug if self.sizes is None else self.sizes.at(step)  # progressive resolution: this step's size
        positions = [k[2] for k in keys]
        draws = sample_uniforms(aug, self.seed, step, positions)
        small, sizes = None, [aug.image_size] * 2
        if self.multicrop is not None:
            small = self.multicrop.config(aug)
            small_draws = sample_uniforms(small, self.seed, step, positions, *self.multicrop.streams())
            sizes += [small.image_size] * self.multicrop.count
        out = []
        for j, (i, _, _) in enumerate(keys):
            def params(width, height, j=j):
                p = sample_views_from(aug, draws, j, height, width)
                return p if small is None else p + sample_views_from(small, small_draws, j, height, width)

            (img, full, *p), note = self.read_first_readable(i, lambda path: decode_for_views(path, params, sizes))
            arrays = views_of(img, full, p[:2], aug) + (views_of(img, full, p[2:], small) if small else [])
            out.append((tuple(torch.from_numpy(a) for a in arrays), i, step, note))
        return out


# SOF markers nvJPEG decodes: baseline (C0), extended 8-bit Huffman (C1), progressive (C2). Lossless (C3,
# C7, CB, CF), arithmetic-coded (C9-CB, CD-CF) and hierarchical (C5-C7, CD-CF) JPEGs, 12-bit samples and
# CMYK/YCCK (4 components) go to PIL in the worker instead.
_DEVICE_SOF = (0xC0, 0xC1, 0xC2)
_ALL_SOF = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))


def jpeg_header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(SOF marker, sample precision, height, width, components) of a JPEG's frame header, read from the
    bytes without decoding; None when no frame header is found (the decoder then reports the file)."""
    for marker, i in jpeg_markers(data):
        if marker in _ALL_SOF:
            if i + 10 > len(data):
                return None
            return (marker, data[i + 4], int.from_bytes(data[i + 5: i + 7], "big"),
                    int.from_bytes(data[i + 7: i + 9], "big"), data[i + 9])
    return None  # scan data before any frame header, or a damaged header


def device_decodable(data: bytes) -> bool:
    """True when nvJPEG can decode these JPEG bytes, they end with the end-of-image marker (`has_jpeg_end`: a
    truncated file may come back from nvJPEG as garbage, without an error) and PIL's pixel cap
    (``Image.MAX_IMAGE_PIXELS``, which the device decoder ignores) allows them; the others are decoded by PIL
    (`read_image`: the cap applies; a truncated file is reported as on the cpu path)."""
    if not has_jpeg_end(data):
        return False
    header = jpeg_header(data)
    if header is None:
        return True  # no readable frame header: the decoder refuses it, and the file is handled then
    sof, precision, h, w, components = header
    cap = Image.MAX_IMAGE_PIXELS
    return sof in _DEVICE_SOF and precision == 8 and components in (1, 3) and not (cap and h * w > cap)


class _Bytes(_FileSamples):
    """Worker side of the device path: ``(index, step, position)`` -> the file's bytes (a JPEG nvJPEG can
    decode), or the decoded (3, H, W) uint8 image (other formats, JPEGs nvJPEG cannot decode, and those it
    refused earlier in the run, ``refused[index]``: decoded here, on the CPU, with PIL). ``refused``: a (files,)
    bool tensor in shared memory that the training process sets (`DevicePath`); None: none refused."""

    def __init__(self, files: list[str], aug: AugmentConfig, seed: int, strict: bool,
                 refused: torch.Tensor | None = None):
        super().__init__(files, aug, seed, strict)
        self.refused = refused

    def __getitem__(self, key):
        i, step, pos = key

        def read(j):
            path = self.files[j]
            data = read_file_bytes(path)  # transient storage errors retried; a vanished file is a DataError
            earlier = self.refused is not None and bool(self.refused[j])
            if not earlier and is_jpeg(data) and device_decodable(data):
                return True, torch.frombuffer(bytearray(data), dtype=torch.uint8), j
            img = read_image(data, name=path)
            return False, torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), j

        (encoded, data, source), note = self.read_first_readable_at(i, read)
        return encoded, data, i, step, pos, note, source


class ByteBatch:
    """A batch of the device path, read as a dict (``batch["bytes"]``; see `_collate_bytes`). Its own
    `pin_memory`, which the loader's pin thread calls (``pin_memory=True`` on CUDA), pins the images the
    workers decoded, for asynchronous copies to the device, and nothing else: the JPEG bytes are read by the
    decoder on the host, pinning them would only cost time. Not a ``Mapping``, so that no loader version pins
    its fields one by one instead."""

    def __init__(self, fields: dict):
        self.fields = fields

    def __getitem__(self, key: str):
        return self.fields[key]

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def keys(self):
        return self.fields.keys()

    def pin_memory(self, device=None) -> ByteBatch:
        """This batch with its worker-decoded images in pinned memory (the other fields shared, not copied)."""
        images = [None if img is None else img.pin_memory() for img in self.fields["images"]]
        return ByteBatch({**self.fields, "images": images})


def _collate_bytes(samples) -> ByteBatch:
    """The device path's batch: the JPEG bytes of all samples in ONE uint8 tensor (one shared-memory file per
    batch, not one per sample), ``offsets`` (n_jpeg + 1,) int64 delimiting each file's bytes in sample order,
    the CPU-decoded (3, H, W) uint8 images of the other samples (None for JPEG samples), and ``source`` (n,) the
    index of the file each sample was read from (the asked one, or its replacement when that was unreadable;
    samples of six fields: the asked one)."""
    encoded, data, idx, step, pos, note = list(zip(*(s[:6] for s in samples)))
    source = [s[6] if len(s) > 6 else s[2] for s in samples]
    jpegs = [d for e, d in zip(encoded, data) if e]
    offsets = torch.zeros(len(jpegs) + 1, dtype=torch.int64)
    if jpegs:
        offsets[1:] = torch.tensor([len(d) for d in jpegs]).cumsum(0)
    return ByteBatch({"encoded": list(encoded), "bytes": torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
                      "offsets": offsets, "images": [None if e else d for e, d in zip(encoded, data)],
                      "index": torch.tensor(idx), "step": torch.tensor(step), "position": torch.tensor(pos),
                      "source": torch.tensor(source), "skipped": list(note)})


def batch_jpegs(batch: ByteBatch) -> list[torch.Tensor]:
    """The JPEG bytes of a `_collate_bytes` batch, one 1-D uint8 view of ``bytes`` per JPEG sample."""
    o = batch["offsets"].tolist()
    return [batch["bytes"][o[k]: o[k + 1]] for k in range(len(o) - 1)]


class _FilePath(DataPath):
    pin = True  # the loader pins its batches for asynchronous copies to CUDA

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
        if getattr(self, "_data_loader", None) is None:
            self._sampler = _StepBatches(self.order, self.batch_size, self.rank, epoch, start)
            self._data_loader = DataLoader(
                make_samples(), batch_sampler=self._sampler, num_workers=self.workers,
                pin_memory=self.device.type == "cuda" and self.pin, collate_fn=collate,
                prefetch_factor=prefetch_for_shm(self.batch_bytes(), self.workers),
                persistent_workers=self.workers > 0,
                worker_init_fn=_ignore_stop_signals if self.workers > 0 else None)
        self._generation = getattr(self, "_generation", 0) + 1
        generation = self._generation
        self._sampler.epoch, self._sampler.start = epoch, start
        for batch in iter(self._data_loader):
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


class CpuPath(_FilePath):
    """Files, views made whole per image in the loader workers (PIL); the device only normalises."""

    kind = "cpu"

    def __init__(self, dataset, aug, **kw):
        super().__init__(dataset, aug, **kw)
        if aug.hue and aug.jitter_p:
            tables()  # built here once: loader workers forked from this process share them

    def batch_bytes(self) -> int:
        # two uint8 views (B, S, S, 3) per batch of this rank (``batch_size`` is already per rank), and
        # multi-crop's (B, s, s, 3) small crops
        small = self.multicrop.count * self.multicrop.config(self.aug).image_size ** 2 if self.multicrop else 0
        return self.batch_size * (2 * self.aug.image_size ** 2 + small) * 3

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        samples = lambda: _PilViews(self.files, self.aug, self.seed, self.strict, self.sizes,  # noqa: E731
                                    self.multicrop)
        for views, idx, step, notes in self._batches(samples, epoch, start):
            self._note_skips(notes)
            yield {"views": tuple(views), "step": step}, self.labels[idx], idx

    def _views(self, batch: dict, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        if int(batch["step"][0]) != step:
            raise RuntimeError(f"batch of step {int(batch['step'][0])} used at step {step}")
        views = batch["views"] if crops else batch["views"][:2]
        # the small crops' normaliser: its own BatchViews, whose row constants are cached for their width
        finishers = [self.batch_views] * 2 + ([self._crop_views_at(step)[1]] * (len(views) - 2) if crops else [])
        # (B, S, S, 3) uint8 -> (B, 3, S, S) float, channels-last in memory.
        if self.device.type != "cpu" or self.workers == 0:
            return tuple(f.finish_hwc_uint8(v.to(self.device, non_blocking=True)) for f, v in zip(finishers, views))
        # On a CPU host the loader workers keep every core busy: one thread here, not a pool whose idle threads
        # spin between the two short passes and take CPU from the workers (measured: 12% instead of 18% of a
        # core at 2 workers). The model step after this gets all its threads back.
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return tuple(f.finish_hwc_uint8(v) for f, v in zip(finishers, views))
        finally:
            torch.set_num_threads(threads)


class DevicePath(_FilePath):
    """Files, read as bytes in the workers; JPEG decode, crops and colour batched on the device."""

    kind = "device"
    # The loader pins a batch (`ByteBatch.pin_memory`: only the images the workers decoded, not the bytes, which
    # nvJPEG reads on the host), so that those images reach the device by asynchronous copies.
    pin = True
    SIZE_SAMPLE = 64  # files whose sizes estimate a batch's bytes

    def __init__(self, dataset, aug, **kw):
        super().__init__(dataset, aug, **kw)
        # (files,) bool in shared memory, made before the loader workers fork: a file the device decoder refused
        # is marked here by this process, and the workers decode it with PIL for the rest of the run.
        self.refused = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()
        self.refused_names: list[str] = []

    def batch_bytes(self) -> int | None:
        """One batch of this rank in shared memory: the mean size of up to `SIZE_SAMPLE` files (spread over the
        data set) times the batch. Images the workers decode (other formats, refused JPEGs) are larger than
        their files but rare in a JPEG folder: not counted. None when no size can be read."""
        n = len(self.files)
        sizes = []
        for k in np.linspace(0, n - 1, min(n, self.SIZE_SAMPLE)).astype(int) if n else []:
            f = self.files[k]
            try:
                size = f.size if isinstance(f, SampleRef) else os.stat(f).st_size
            except OSError:
                continue
            if size > 0:
                sizes.append(size)
        return int(np.mean(sizes) * self.batch_size) if sizes else None

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        samples = lambda: _Bytes(self.files, self.aug, self.seed, self.strict, self.refused)  # noqa: E731
        for batch in self._batches(samples, epoch, start, collate=_collate_bytes):
            self._note_skips(batch["skipped"])
            yield batch, self.labels[batch["index"]], batch["index"]

    def decode(self, batch: ByteBatch) -> list[torch.Tensor]:
        """The batch's images as (3, H_i, W_i) uint8 on the device. A JPEG the device decoder refuses is
        decoded by PIL (the CPU path's decoder) and used as is, and remembered (`refused`), so that the workers
        decode it with PIL from then on; only a file PIL cannot read either is replaced by the next readable
        file, with a warning."""
        jpeg = [k for k, e in enumerate(batch["encoded"]) if e]
        encoded = batch_jpegs(batch)
        images = [d.to(self.device, non_blocking=True) if d is not None else None for d in batch["images"]]
        decoded, errors = decode_batch(encoded, self.device)
        failures, refused = iter(errors), []
        for j, (k, img) in enumerate(zip(jpeg, decoded)):
            if img is None:
                source = int(batch["source"][k]) if "source" in batch else int(batch["index"][k])
                self.refused[source] = True
                refused.append(self.files[source])
                images[k] = self._cpu_decode(source, encoded[j], next(failures))
            else:
                images[k] = img
        if refused:
            self._say_refused(refused)
        return images

    def _say_refused(self, paths: list[str]) -> None:
        """One warning line for the files the device decoder refused in a batch (the first three named)."""
        self.refused_names += paths
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        print(f"warning: the device JPEG decoder refused {len(paths)} file(s) ({shown}); they are decoded with PIL "
              f"in the loader workers from now on ({len(self.refused_names)} in this run)", file=sys.stderr,
              flush=True)

    def _cpu_decode(self, i: int, data: torch.Tensor, reason: str) -> torch.Tensor:
        """A JPEG refused by the device decoder, decoded by PIL; if PIL cannot read it either, the next
        readable file (the CPU path's rule)."""
        try:
            img = read_image(data.numpy().tobytes(), name=self.files[i])
        except DataError as e:
            return self._replacement(i, f"{reason}; {getattr(e, 'reason', e)}")
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).to(self.device)

    def _replacement(self, i: int, reason: str) -> torch.Tensor:
        path = self.files[i]
        if self.strict:
            raise DataError(f"corrupt or unreadable image {path} ({reason}); remove or replace the file")
        self._note_skips([f"{path}\t{reason}"])
        samples = _FileSamples(self.files, self.aug, self.seed, strict=False)
        img, _ = samples.read_first_readable((i + 1) % len(self.files), read_image)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).to(self.device)

    def _views(self, batch: dict, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        if int(batch["step"][0]) != step:
            raise RuntimeError(f"batch of step {int(batch['step'][0])} used at step {step}")
        images = self.decode(batch)
        heights = np.array([img.shape[1] for img in images])
        widths = np.array([img.shape[2] for img in images])
        out, aug, pos = [], self.aug_at(step), batch["position"].numpy()
        for v in (0, 1):
            p = view_params(aug, v, self.seed, step, pos, heights, widths)
            out.append(self.batch_views.finish(run_ops(DEVICE_OPS, images, p, aug)))
        if crops:  # every small crop in one pass of each op (the decoded images listed once per crop)
            small, finisher = self._crop_views_at(step)
            m = self.multicrop.count
            p = self.multicrop.all_params(aug, self.seed, step, pos, heights, widths)
            out += finisher.finish(run_ops(DEVICE_OPS, images * m, p, small)).chunk(m)
        return tuple(out)


def decode_for_views(path: str, params_for_size, size):
    """Read ``path`` once for its views: ``params_for_size(width, height) -> (p1, p2, ...)`` draws the parameters
    from the header's size; the decode is drafted when every crop allows (``size``: the output side of every
    view, or one per view). Returns (image, full size, p1, p2, ...)."""
    drawn = {}

    def draft(width: int, height: int):
        drawn["size"] = (width, height)
        drawn["params"] = params_for_size(width, height)
        return draft_size(width, height, list(drawn["params"]), size)

    img = read_image(path, draft=draft)  # one open: header, parameters, drafted decode
    return (img, drawn["size"], *drawn["params"])


# --------------------------------------------------------------------------------------------------------
# The data paths for files (`register_data_path` adds one)
# --------------------------------------------------------------------------------------------------------

for _spec in (
    DataPathSpec("cpu", CpuPath, "whole views made with PIL in the loader workers"),
    DataPathSpec("device", DevicePath, "JPEG decode and views batched on the GPU"),
):
    register_data_path(_spec)
