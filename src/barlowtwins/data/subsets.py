"""Labelled subsets for semi-supervised fine-tuning.

* ImageNet 1% / 10%: the standard lists (shipped in the package, see ``data_files/NOTICE.md``), matched to an
  ImageNet training folder by file name.
* Any other labelled data set: a deterministic class-balanced k% subset (seeded), or a user's list file.

Every subset can be written to a list file and read back, so a fine-tuning run can be repeated exactly.
"""

from __future__ import annotations

import gzip
import os
from importlib import resources
from pathlib import Path

import torch

from barlowtwins.errors import DataError
from barlowtwins.runtime.files import write_text_atomic

STANDARD_PERCENTS = (1, 10)


def imagenet_subset_names(percent: int) -> list[str]:
    """File names (e.g. ``n04235860_14959.JPEG``) of the standard ImageNet ``percent``% subset."""
    if percent not in STANDARD_PERCENTS:
        raise DataError(f"the standard ImageNet subsets are 1% and 10%, not {percent}%")
    data = resources.files("barlowtwins.data_files").joinpath(f"imagenet_{percent}percent.txt.gz").read_bytes()
    return [line for line in gzip.decompress(data).decode().splitlines() if line.strip()]


def parse_subset_lines(lines: list[str]) -> list[tuple[str, str]]:
    """``n01440764_10026.JPEG`` -> (wnid, file name); the class is the prefix before the first underscore."""
    out = []
    for line in lines:
        name = line.strip()
        if not name:
            continue
        wnid, sep, _ = name.partition("_")
        if not sep:
            raise DataError(f"subset line '{name}' is not an ImageNet file name like n01440764_10026.JPEG")
        out.append((wnid, name))
    return out


def select_by_names(files: list[str], names: list[str], what: str) -> torch.Tensor:
    """Indices of ``files`` whose base name or trailing path is listed in ``names``; every name must be found."""
    by_base: dict[str, int] = {}
    by_path: dict[str, int] = {}
    for i, f in enumerate(files):
        by_base.setdefault(os.path.basename(f), i)
        by_path[f.replace(os.sep, "/")] = i
    picked, missing = [], []
    for n in names:
        if n in by_base:
            picked.append(by_base[n])
            continue
        hit = next((i for p, i in by_path.items() if p.endswith("/" + n.lstrip("/"))), None) if "/" in n else None
        (picked.append(hit) if hit is not None else missing.append(n))
    if missing:
        raise DataError(f"{len(missing)} of {len(names)} images of {what} are not in the data set "
                        f"(e.g. {missing[0]}); check --data-dir points at the full training set")
    return torch.tensor(sorted(set(picked)), dtype=torch.int64)


def imagenet_subset(dataset, percent: int) -> torch.Tensor:
    """Indices into an ImageNet training folder (``labelled_folder(root, 'train')``) of the standard subset."""
    names = [name for _, name in parse_subset_lines(imagenet_subset_names(percent))]
    return select_by_names(dataset.files, names, f"the ImageNet {percent}% list")


def balanced_subset(labels: torch.Tensor, percent: float, seed: int = 0) -> torch.Tensor:
    """A class-balanced ``percent``% of the labelled samples: from each class, round(percent% of its count)
    samples (at least one), drawn by a seeded permutation. The same (labels, percent, seed) -> same indices."""
    if not 0 < percent <= 100:
        raise DataError(f"--train-percent must be in (0, 100], got {percent}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in torch.unique(labels[labels >= 0]).tolist():
        idx = torch.nonzero(labels == c).squeeze(1)
        k = max(1, round(len(idx) * percent / 100))
        picked.append(idx[torch.randperm(len(idx), generator=g)[:k]])
    return torch.cat(picked).sort().values


def is_imagenet_folder(dataset) -> bool:
    classes = getattr(dataset, "classes", [])
    return len(classes) == 1000 and all(len(c) == 9 and c[0] == "n" and c[1:].isdigit() for c in classes)


def write_subset_file(path: Path, dataset, indices: torch.Tensor) -> Path:
    """One line per sample: the file name for image folders, else the integer index."""
    files = getattr(dataset, "files", None)
    lines = [os.path.basename(files[i]) if files is not None else str(int(i)) for i in indices.tolist()]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path


def read_subset_file(path: str | os.PathLike, dataset) -> torch.Tensor:
    """Indices from a list file of file names / relative paths (image folders) or integer indices."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"subset file {p} does not exist")
    lines = [ln.strip() for ln in p.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise DataError(f"subset file {p} is empty")
    if all(ln.isdigit() for ln in lines):
        idx = torch.tensor(sorted({int(ln) for ln in lines}), dtype=torch.int64)
        if int(idx.max()) >= len(dataset):
            raise DataError(f"subset file {p} lists index {int(idx.max())} but the data set has {len(dataset)} samples")
        return idx
    files = getattr(dataset, "files", None)
    if files is None:
        raise DataError(f"subset file {p} lists names, but this data set has no files; list integer indices")
    return select_by_names(files, lines, f"subset file {p}")
