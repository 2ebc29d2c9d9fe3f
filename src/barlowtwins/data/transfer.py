"""Readers for the paper's transfer data sets, in the layouts they are published in.

* iNaturalist 2018: ``<root>/train2018.json`` and ``val2018.json`` (COCO-style: ``images`` with ``id`` and
  ``file_name`` relative to ``<root>``, ``annotations`` with ``image_id`` and ``category_id``).
* Places-205: ``<root>/trainvalsplit_places205/{train,val}_places205.csv`` with lines ``a/abbey/x.jpg 0``;
  images under ``<root>/images256`` (or ``<root>/data/vision/torralba/deeplearning/images256``, or ``--image-root``).
* PASCAL VOC 2007: ``VOCdevkit/VOC2007`` with ``JPEGImages/`` and ``ImageSets/Main/<class>_<split>.txt``
  (1 present, -1 absent, 0 difficult); splits ``trainval`` and ``test``. Multi-label: the data set carries a
  (N, 20) ``targets`` matrix with 1 present, 0 absent, -1 difficult.

Every transfer data set, the labelled ``folder`` included, is an entry of `TRANSFER_DATASETS` (name -> reader,
default splits, protocol, description); `build_transfer_dataset` is the one entry point and
`register_transfer_dataset` adds one (``barlowtwins transfer --dataset`` offers every entry):

    >>> register_transfer_dataset(TransferDataset("flowers", my_reader, ("train", "test"), "linear",
    ...                                           "Oxford Flowers in my layout"))
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from barlowtwins.data.datasets import ImageFiles, labelled_folder
from barlowtwins.errors import DataError
from barlowtwins.runtime.registry import Registry

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
               "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")


def _need_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} folder {path} does not exist; check --data-dir")
    return path


def inaturalist2018(root: str | Path, split: str = "train") -> ImageFiles:
    root = _need_dir(Path(root).expanduser(), "iNaturalist 2018")
    names = {"train": "train2018.json", "val": "val2018.json", "test": "val2018.json"}
    if split not in names:
        raise DataError(f"iNaturalist 2018 has splits train and val, not '{split}'")
    ann_file = root / names[split]
    if not ann_file.is_file():
        raise DataError(f"iNaturalist annotation file {ann_file} not found (expected train2018.json and "
                        "val2018.json in --data-dir)")
    try:
        data = json.loads(ann_file.read_text())
        images = {im["id"]: im["file_name"] for im in data["images"]}
        labels = {a["image_id"]: a["category_id"] for a in data["annotations"]}
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{ann_file} is not an iNaturalist annotation file ({type(e).__name__}: {e})") from None
    # Category ids mapped to 0..C-1 over the categories listed (or seen), so train and val agree.
    cats = sorted(c["id"] for c in data.get("categories", [])) or sorted(set(labels.values()))
    index = {c: i for i, c in enumerate(cats)}
    ids = sorted(images)
    files = [str(root / images[i]) for i in ids]
    ys = [index[labels[i]] for i in ids]
    if not files:
        raise DataError(f"{ann_file} lists no images")
    return ImageFiles(files, ys, [str(c) for c in cats], f"inat2018-{split}")


def places205(root: str | Path, split: str = "train", image_root: str | Path | None = None) -> ImageFiles:
    root = _need_dir(Path(root).expanduser(), "Places-205")
    if split not in ("train", "val", "test"):
        raise DataError(f"Places-205 has splits train and val, not '{split}'")
    csv = root / "trainvalsplit_places205" / f"{'train' if split == 'train' else 'val'}_places205.csv"
    if not csv.is_file():
        raise DataError(f"Places-205 list {csv} not found (expected trainvalsplit_places205/ in --data-dir)")
    candidates = [Path(image_root)] if image_root else [
        root / "images256", root / "data" / "vision" / "torralba" / "deeplearning" / "images256", root]
    base = next((c for c in candidates if c.is_dir()), None)
    if base is None:
        raise DataError(f"Places-205 image folder not found (tried {', '.join(map(str, candidates))}); "
                        "pass --image-root")
    files, ys = [], []
    for n, line in enumerate(csv.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise DataError(f"{csv}:{n}: expected '<relative path> <label>', got '{line.strip()}'")
        files.append(str(base / parts[0]))
        ys.append(int(parts[1]))
    if not files:
        raise DataError(f"{csv} lists no images")
    classes = [str(c) for c in range(max(ys) + 1)]
    return ImageFiles(files, ys, classes, f"places205-{split}")


def _voc_root(root: Path) -> Path:
    for c in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (c / "JPEGImages").is_dir() and (c / "ImageSets" / "Main").is_dir():
            return c
    raise DataError(f"no VOC2007 layout under {root} (expected JPEGImages/ and ImageSets/Main/, "
                    "e.g. VOCdevkit/VOC2007)")


class MultiLabelImages(ImageFiles):
    """An `ImageFiles` whose samples have several labels: ``targets`` (N, classes), set by its reader."""

    targets: torch.Tensor


def voc2007(root: str | Path, split: str = "trainval") -> MultiLabelImages:
    """VOC07 classification: labels -1 (multi-label), ``targets`` (N, 20): 1 present, 0 absent, -1 difficult."""
    base = _voc_root(_need_dir(Path(root).expanduser(), "VOC2007"))
    split = {"train": "trainval", "val": "test"}.get(split, split)
    if split not in ("trainval", "test", "train", "val"):
        raise DataError(f"VOC2007 splits are trainval and test, not '{split}'")
    main = base / "ImageSets" / "Main"
    ids_file = main / f"{split}.txt"
    if not ids_file.is_file():
        raise DataError(f"VOC2007 split file {ids_file} not found")
    ids = [ln.split()[0] for ln in ids_file.read_text().splitlines() if ln.strip()]
    row = {i: k for k, i in enumerate(ids)}
    targets = torch.zeros(len(ids), len(VOC_CLASSES), dtype=torch.int8)
    for c, cls in enumerate(VOC_CLASSES):
        f = main / f"{cls}_{split}.txt"
        if not f.is_file():
            raise DataError(f"VOC2007 label file {f} not found")
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) != 2 or parts[0] not in row:
                continue
            v = int(parts[1])
            targets[row[parts[0]], c] = 1 if v == 1 else (-1 if v == 0 else 0)
    files = [str(base / "JPEGImages" / f"{i}.jpg") for i in ids]
    ds = MultiLabelImages(files, [-1] * len(files), list(VOC_CLASSES), f"voc2007-{split}")
    ds.targets = targets
    return ds


# --------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------

TRANSFER_PROTOCOLS = ("linear", "svm")


@dataclass(frozen=True)
class TransferDataset:
    """A transfer data set by name: ``reader(root, split, image_root)`` returns it; ``splits`` are the default
    (train, test) splits; ``protocol`` how it is evaluated: ``linear`` (a linear probe, by ``--protocol``) or
    ``svm`` (per-class linear SVMs and mAP, for a multi-label set carrying ``targets``); ``description`` is one
    line for ``--help``."""

    name: str
    reader: Callable
    splits: tuple[str, str]
    protocol: str
    description: str

    def __post_init__(self):
        if self.protocol not in TRANSFER_PROTOCOLS:
            raise ValueError(f"transfer data set {self.name}: protocol must be one of "
                             f"{', '.join(TRANSFER_PROTOCOLS)}, not '{self.protocol}'")


TRANSFER_DATASETS: Registry[TransferDataset] = Registry("transfer data set", DataError)
register_transfer_dataset = TRANSFER_DATASETS.register  # a new transfer set: one TransferDataset registered here


for _spec in (
    TransferDataset("folder", lambda root, split, image_root: labelled_folder(root, split), ("train", "val"),
                    "linear", "any labelled folder, <data-dir>/<split>/<class>/*"),
    TransferDataset("inat2018", lambda root, split, image_root: inaturalist2018(root, split), ("train", "val"),
                    "linear", "iNaturalist 2018 (train2018.json, val2018.json)"),
    TransferDataset("places205", places205, ("train", "val"), "linear",
                    "Places-205 (trainvalsplit_places205/ lists, images256/ or --image-root)"),
    TransferDataset("voc2007", lambda root, split, image_root: voc2007(root, split), ("trainval", "test"), "svm",
                    "PASCAL VOC07 classification (per-class SVMs, mAP)"),
):
    register_transfer_dataset(_spec)


def transfer_spec(name: str) -> TransferDataset:
    """The registry entry of ``name``, with a one-line error listing the valid names."""
    return TRANSFER_DATASETS.lookup(name)


def build_transfer_dataset(name: str, root: str | None, split: str | None = None, image_root: str | None = None):
    """The ``split`` of transfer data set ``name`` under ``root`` (see `TRANSFER_DATASETS`); ``split`` None: the
    entry's default training split."""
    spec = transfer_spec(name)
    if root is None:
        raise DataError(f"--dataset {name} needs --data-dir")
    return spec.reader(root, spec.splits[0] if split is None else split, image_root)
