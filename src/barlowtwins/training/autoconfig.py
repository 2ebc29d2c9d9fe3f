"""Defaults that fit the data when no preset is given.

The config's defaults are the paper's ImageNet recipe (224 px, projector 8192-8192-8192, batch 2048). Taken
silently for small images they cost a lot for nothing: a ResNet-18 on 32-px images with that projector needs
3.7 GB and writes a 1.2 GB checkpoint, about 8x slower than a fitting projector. With no preset,
:func:`fit_to_data` adapts what the user did not set:

* a built-in data set of known size (Fashion-MNIST 28 px, CIFAR 32 px, STL-10 96 px) is trained at that size
  instead of being upscaled to 224 px;
* on small images (64 px or less): the small-image stem for ResNets (``small`` up to 32 px, ``small-pool`` up to
  64 px), a projector of three layers of 4x the backbone's feature width (512 to 2048: 2048 for a ResNet-18 or
  ResNet-50, as in the usual CIFAR settings), and batch 256 (the ``cifar10`` preset's).

* a folder of images (``images``, ``folder``) trained on the CPU gets the CPU recipe (`cpu_folder_plan`): the
  paper's recipe would make a few dozen steps in an hour there and learn nothing measurable. The plan reads the
  folder (how many images, their typical size and channels, from a sample of file headers) and picks a small
  resolution, a narrow ResNet-18, a fitting projector and batch, and the short-run optimiser settings of the
  ``fashion-mnist`` preset (LARS trust coefficient 0.02, no zero-initialised residual branches), measured in
  benchmarks/RESULTS.md ("your own photos on a CPU").

Every field set by a preset, a YAML file or a flag is kept as it is (in Python: every field given to
``PretrainConfig``, `config.explicit_fields`). The returned note, printed as the first line of ``barlowtwins
pretrain`` (and by `barlowtwins.pretrain` when it chose something), says what was chosen.

`plan_config` is that plan for a set of explicit values, the one function ``barlowtwins pretrain`` and
`barlowtwins.pretrain` use; `recipe_for` asks for it from Python:

    >>> cfg = recipe_for("my_images", time_budget_minutes=10)   # the CLI's plan for the folder (a CPU run here)
    >>> cfg = recipe_for("cifar10")                              # a built-in data set: its size, a fitting network
    >>> cfg = recipe_for(preset="fashion-mnist", data_dir="data") # a preset (no fit: the preset decides)
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image

from barlowtwins.data.datasets import DATASETS
from barlowtwins.data.image_files import split_folders
from barlowtwins.data.images import is_image_file
from barlowtwins.models.backbones import create_backbone
from barlowtwins.training.config import PretrainConfig, config_from_dict, explicit_fields, resolve_values

SMALL_IMAGES = 64  # px: at or below, the ImageNet projector and batch do not fit
SMALL_BATCH = 256
MATCHING_PRESETS = {"fashion-mnist": "fashion-mnist", "cifar10": "cifar10"}

# The CPU recipe for a folder of images (benchmarks/own_photos.py measured it on photo-like scenes).
# (config field -> value: values of several types)
CPU_FOLDER_RECIPE: dict[str, Any] = {"image_size": 48, "backbone": "resnet18", "stem": "small-pool", "width": 16,
                                     "projector": "1024-1024-1024", "eta": 0.02, "zero_init_residual": False,
                                     "crop_scale": (0.25, 1.0), "warmup_epochs": 2.0}
CPU_BATCH = 128
FOLDER_DATASETS = ("images", "folder")
HEADER_SAMPLE = 64  # image headers read to learn the typical size and channels


@dataclasses.dataclass
class FolderSummary:
    """What the planner knows about a folder of images: a count and a sample of sizes and modes."""
    images: int
    median_side: int | None  # the shorter side, median of the sample
    grayscale_share: float


def summarise_folder(root: str | os.PathLike, limit: int = 2_000_000) -> FolderSummary | None:
    """Count the image files under ``root`` (names only, no decoding) and read up to `HEADER_SAMPLE` headers
    spread over them; None when the folder does not exist (the trainer says so in one line)."""
    root = Path(root)
    if not root.is_dir():
        return None
    files: list[str] = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(folder, n) for n in sorted(names) if is_image_file(n)]
        if len(files) >= limit:
            break
    step = max(1, len(files) // HEADER_SAMPLE)
    sides, gray = [], 0
    for f in files[::step][:HEADER_SAMPLE]:
        try:
            with Image.open(f) as img:  # the header only: size and mode
                sides.append(min(img.size))
                gray += img.mode in ("L", "LA", "I", "I;16", "1")
        except Exception:  # noqa: BLE001 (an unreadable file is the data path's business, not the plan's)
            continue
    return FolderSummary(len(files), int(statistics.median(sides)) if sides else None,
                         gray / len(sides) if sides else 0.0)


def trains_on_cpu(cfg: PretrainConfig) -> bool:
    if cfg.device == "cpu":
        return True
    return cfg.device == "auto" and not torch.cuda.is_available() and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available())


def cpu_folder_plan(cfg: PretrainConfig, explicit: set[str], summary: FolderSummary | None) -> dict:
    """The fields of the CPU recipe the user did not set, fitted to the folder: the resolution is never above the
    images' own size, and the batch leaves at least 4 steps per epoch on a small folder."""
    changes = {k: v for k, v in CPU_FOLDER_RECIPE.items() if k not in explicit}
    if "backbone" in explicit and not cfg.backbone.startswith(("resnet", "wide_resnet", "resnext")):
        changes.pop("stem", None)  # the user's own backbone: stem and width are ResNet settings
        changes.pop("width", None)
    if summary is not None and summary.median_side and "image_size" in changes:
        changes["image_size"] = max(16, min(changes["image_size"], summary.median_side))
    if "batch_size" not in explicit:
        batch = CPU_BATCH
        if summary is not None and summary.images:
            while batch > 16 and summary.images < 4 * batch:
                batch //= 2
        changes["batch_size"] = batch
    return changes


def small_projector(num_features: int) -> str:
    """Three layers of 4x the feature width, as a power of two clamped to 512..2048."""
    width = 1 << max(0, (4 * num_features - 1).bit_length())
    width = min(2048, max(512, width))
    return f"{width}-{width}-{width}"


def _num_features(cfg: PretrainConfig) -> int:
    with torch.device("meta"):  # the architecture only: no memory, no initialisation cost
        # torch types a module's undeclared attributes as Tensor | Module; create_backbone sets this int
        return int(cast(int, create_backbone(cfg.backbone, stem=cfg.stem, width=cfg.width).num_features))


def fit_to_data(cfg: PretrainConfig, explicit: set[str] | None = None) -> tuple[PretrainConfig, str | None]:
    """``cfg`` with the fields the user did not set (not in ``explicit``; default `explicit_fields`: those given to
    the config or not at their default) fitted to the image size.

    Returns the new config and a one-line note for the user (None when a preset was given: the preset decides).
    """
    explicit = explicit_fields(cfg) if explicit is None else set(explicit)
    if cfg.preset or "preset" in explicit:
        return cfg, None
    if cfg.dataset in FOLDER_DATASETS and trains_on_cpu(cfg):
        root = cfg.data_dir
        splits = split_folders(root) if root and cfg.dataset == "images" else []
        if root and splits:  # what image_folder reads: train/ only
            root = os.path.join(root, splits[0])
        summary = summarise_folder(root) if root else None
        plan = cpu_folder_plan(cfg, explicit, summary)
        new = dataclasses.replace(cfg, **plan)
        return new, _cpu_note(new, plan, summary)
    changes: dict = {}
    native = DATASETS[cfg.dataset].native_size if cfg.dataset in DATASETS else None  # `DatasetSpec.native_size`
    if native is not None and "image_size" not in explicit and cfg.image_size != native:
        changes["image_size"] = native
    size = changes.get("image_size", cfg.image_size)
    if size <= SMALL_IMAGES:
        is_resnet = cfg.backbone.startswith(("resnet", "wide_resnet", "resnext"))
        if is_resnet and "stem" not in explicit and cfg.stem == "standard":
            changes["stem"] = "small" if size <= 32 else "small-pool"
        if "projector" not in explicit:
            changes["projector"] = small_projector(_num_features(dataclasses.replace(cfg, **changes)))
        if "batch_size" not in explicit:
            changes["batch_size"] = SMALL_BATCH
    new = dataclasses.replace(cfg, **changes)
    return new, _note(new, changes, size)


def _cpu_note(cfg: PretrainConfig, changes: dict, summary: FolderSummary | None) -> str:
    seen = ""
    if summary is not None:
        seen = f"{summary.images} images" + (f", typically {summary.median_side} px" if summary.median_side else "")
        seen += f", {summary.grayscale_share:.0%} grayscale" if summary.grayscale_share else ""
        seen = f" for {seen}"
    width = f" width {cfg.width}" if cfg.width else ""
    recipe = (f"{cfg.backbone}{width}, {cfg.image_size} px, stem {cfg.stem}, projector {cfg.projector}, "
              f"batch {cfg.batch_size}, eta {cfg.eta}")
    chosen = ", ".join("--" + k.replace("_", "-") for k in changes) or "nothing: all set by you"
    budget = "" if cfg.time_budget_minutes else \
        "; set --time-budget-minutes to fit the schedule to the time you have"
    return f"no preset, training on the CPU: the CPU recipe{seen} ({recipe}; chosen: {chosen}; flags override){budget}"


def _note(cfg: PretrainConfig, changes: dict, size: int) -> str:
    recipe = f"{cfg.backbone}, {size} px, stem {cfg.stem}, projector {cfg.projector}, batch {cfg.batch_size}"
    preset = MATCHING_PRESETS.get(cfg.dataset)
    hint = f"; --preset {preset} is the tuned recipe for this data" if preset else ""
    if size > SMALL_IMAGES:
        what = "the paper's ImageNet recipe" if (cfg.projector, cfg.batch_size) == ("8192-8192-8192", 2048) \
            else "your settings"
        return f"no preset: {what} ({recipe}){hint}"
    if not changes:
        return f"no preset: small images, your settings ({recipe}){hint}"
    chosen = ", ".join("--" + k.replace("_", "-") for k in changes)
    return f"no preset: small images, not the ImageNet recipe: {recipe} (chosen: {chosen}; flags override){hint}"


def plan_config(values: dict) -> tuple[PretrainConfig, str | None]:
    """The config a mapping of explicit field values plans, and its note: `config_from_dict` of ``values``, then
    `fit_to_data` with exactly those fields as set. ``barlowtwins pretrain`` passes what its preset, ``--config``
    and flags set; `recipe_for` its arguments."""
    return fit_to_data(config_from_dict(values), explicit=set(values))


def recipe_for(source: str | os.PathLike | None = None, /, *, preset: str | None = None,
               **fields) -> PretrainConfig:
    """The config ``barlowtwins pretrain`` plans for ``source``, without running anything (but reading the
    folder's file names and a few image headers).

    ``source`` is a built-in data set's name (``cifar10``, ``fashion-mnist``, ...: ``--dataset NAME``) or a folder
    of images (``--dataset images --data-dir FOLDER``, unless ``dataset=`` says otherwise). ``preset`` and
    ``fields`` (any `PretrainConfig` field) are set as ``--preset`` and flags are, and kept as given; the fields left
    are fitted to the data as the CLI fits them (`fit_to_data`: on a CPU the short-run recipe for a folder, the
    native size and a fitting network for small images). Pass the result to `barlowtwins.pretrain`:

        >>> cfg = recipe_for("my_images", time_budget_minutes=10, out="runs/mine")
        >>> summary = barlowtwins.pretrain(cfg)
    """
    values = dict(fields)
    if source is not None:
        name = os.fspath(source)
        spec = DATASETS.get(name) if isinstance(name, str) else None
        if spec is not None and spec.name not in FOLDER_DATASETS and not spec.needs_root:
            values.setdefault("dataset", name)
        else:
            values.setdefault("dataset", "images")
            values.setdefault("data_dir", str(name))
    return plan_config(resolve_values(preset, None, values))[0]
