"""The pretraining data path, from a data set to the two normalised views on the training device.

    >>> pipe = build_pipeline(dataset, aug, batch_size=64, seed=0, rank=0, world=1, device=torch.device("cpu"),
    ...                       data_path="auto")
    >>> for batch, labels, indices in pipe.epoch(epoch, start=first_batch):
    ...     x1, x2 = pipe.views(batch, step)                     # (B, 3, S, S) float32 each, on the device
    ...     step += 1

With multi-crop (`build_pipeline(..., multicrop=MultiCrop(...))`, `transforms.multicrop`) ``all_views(batch, step)``
returns the two full views and then the small crops, (B, 3, s, s) each, made on the same path as the full views.

Three paths, one contract (`DataPath`), one module each in `data.paths`:

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

from dataclasses import dataclass

import torch

from barlowtwins.data.datasets import is_in_memory
from barlowtwins.data.paths.base import DataPath
from barlowtwins.data.paths.cpu import CpuPath
from barlowtwins.data.paths.device import DevicePath
from barlowtwins.data.paths.memory import MemoryPath
from barlowtwins.errors import field_error
from barlowtwins.runtime.log import get_logger
from barlowtwins.runtime.registry import Registry
from barlowtwins.transforms.device import check_device_decoder
from barlowtwins.transforms.multicrop import MultiCrop, multicrop_from
from barlowtwins.transforms.progressive import ViewSizes, check_progressive_start
from barlowtwins.transforms.spec import AugmentConfig, augment_config

log = get_logger(__name__)

AUTO = "auto"  # the data-path name resolved per device by `choose_data_path`


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
        raise field_error(lambda n: f"unknown {n('data_path')} '{data_path}'; choose "
                                    f"{', '.join(data_path_choices())}")
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
        log.warning(f"warning: {why}; using --data-path cpu instead")
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
                          multicrop=multicrop_from(getattr(cfg, "multicrop_count", 0),
                                                   getattr(cfg, "multicrop_size", 0),
                                                   getattr(cfg, "multicrop_scale", None), cfg.image_size))


# --------------------------------------------------------------------------------------------------------
# The data paths for files (`register_data_path` adds one)
# --------------------------------------------------------------------------------------------------------

for _spec in (
    DataPathSpec("cpu", CpuPath, "whole views made with PIL in the loader workers"),
    DataPathSpec("device", DevicePath, "JPEG decode and views batched on the GPU"),
):
    register_data_path(_spec)
