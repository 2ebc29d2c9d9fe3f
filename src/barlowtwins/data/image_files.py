"""A list of image files (or samples inside bigger files: `images.SampleRef`) with labels: the data set of every
source that is not held in memory (folders, shards, tables)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from barlowtwins.data.images import read_image


class ImageFiles(torch.utils.data.Dataset):
    """A list of image files with labels (-1 = unlabelled); ``transform`` is applied to the PIL image."""

    in_memory = False

    def __init__(self, files: Sequence[str], labels: Sequence[int], classes: Sequence[str] = (), name: str = "",
                 transform: Callable | None = None):
        self.files = list(files)
        self.labels = torch.as_tensor(list(labels), dtype=torch.int64)
        self.classes = list(classes)
        self.name = name
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        img = read_image(self.files[i])
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes) if self.classes else int(self.labels.max()) + 1

    def subset(self, indices: Sequence[int] | torch.Tensor) -> "ImageFiles":
        idx = [int(i) for i in indices]
        return ImageFiles([self.files[i] for i in idx], self.labels[idx].tolist(), self.classes, self.name,
                          self.transform)


TRAIN_SPLIT = "train"
HELD_OUT_SPLITS = ("val", "validation", "test")  # sub-folder names of held-out splits beside a train/ folder


def split_folders(root: str | os.PathLike) -> list[str]:
    """The split sub-folders of ``root`` when it is laid out as splits (a ``train/`` folder beside at least one of
    `HELD_OUT_SPLITS`), sorted with ``train`` first; [] otherwise. A folder of images read "at any depth" would
    mix them: `image_folder` reads ``train/`` only, and the CPU plan counts what it reads."""
    root = Path(root)
    try:
        names = {e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith(".")}
    except OSError:
        return []
    held_out = sorted(n for n in names if n.lower() in HELD_OUT_SPLITS)
    if TRAIN_SPLIT not in names or not held_out:
        return []
    return [TRAIN_SPLIT, *held_out]
