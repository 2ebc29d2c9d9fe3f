"""WebDataset tar shards as a data set with random access: exact, resumable, and read shard by shard.

    >>> ds = shard_dataset("shards/train-{000000..000127}.tar")      # or a folder of .tar files, or a list file
    >>> ds.files[0]                                                  # 'shards/train-000000.tar:n01440764_10026.jpg'
    >>> img, label = ds[0]                                           # RGB PIL image, label from .cls/.json or -1
    >>> sampler = ds.batch_order(batch_size=64, seed=0, rank=0, world_size=8)   # the pretraining order

A shard is a tar file in the WebDataset layout: the members of one sample share a key (the member name up to
the first dot of its base name), the image is the ``jpg``/``jpeg``/``png``/``webp`` member, a label the ``cls``
member (an integer as text) or the ``json`` member (``{"label": k}`` or ``{"cls": k}``). ``pipe:CMD`` sources
(``pipe:aws s3 cp s3://bucket/train-000000.tar -``) are streamed once into a local cache folder
(``$BARLOWTWINS_SHARD_CACHE``, default ``~/.cache/barlowtwins/shards``) and read from there.

Why not the ``webdataset`` package's streaming pipeline: our views are a function of (seed, step, position in
the global batch), and a resumed run must see the very batches of the uninterrupted one. A stream with its own
shuffle buffer and random generator can give neither without replaying the epoch. So each shard is indexed
once (from the `manifest.json` that ``barlowtwins shard`` writes, else from its tar headers, seeking over the
data: nothing is decoded) and every sample becomes a `TarMember`: a name that reads its bytes with one seek.
The samples then go through the same samplers and data paths as a folder's files: W ranks see what one process
sees, a resume starts at its batch without reading the epoch so far, and an unreadable sample is skipped and
counted like an unreadable file.

The pretraining order keeps reads local (`ShardOrder`): each epoch shuffles the shards (a function of seed and
epoch), then shuffles the samples within windows of `WINDOW` consecutive shards, so a stretch of batches reads
a few shards rather than the whole data set.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from barlowtwins.data.image_files import ImageFiles
from barlowtwins.data.images import SampleRef
from barlowtwins.data.sampling import GlobalBatchSampler
from barlowtwins.errors import DataError

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # the members that hold a sample's image, in order of preference
LABEL_KEYS = ("cls", "json")
MANIFEST = "manifest.json"
WINDOW = 4  # shards whose samples are shuffled together in the pretraining order
CACHE_ENV = "BARLOWTWINS_SHARD_CACHE"


# --------------------------------------------------------------------------------------------------------
# Naming the shards: brace patterns, folders, list files, pipe: commands
# --------------------------------------------------------------------------------------------------------

_BRACE = re.compile(r"\{([^{}]*)\}")


def expand_braces(pattern: str) -> list[str]:
    """``train-{000..002}.tar`` -> train-000.tar, train-001.tar, train-002.tar (zero padding kept); ``{a,b}``
    alternatives; several braces multiply, left to right."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body, head, tail = m.group(1), pattern[:m.start()], pattern[m.end():]
    r = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if r:
        lo, hi = r.group(1), r.group(2)
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        step = 1 if int(hi) >= int(lo) else -1
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + step, step)]
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def shard_sources(spec: str) -> list[str]:
    """The shards a ``--data-dir`` names, in order: a brace pattern, a glob, a folder (its ``*.tar``, sorted), a
    list file (one shard per line, relative to the list's folder), or ``pipe:`` commands. One line when a local
    shard is missing or nothing matches."""
    spec = str(spec)
    if spec.startswith("pipe:"):
        return expand_braces(spec)
    path = Path(spec).expanduser()
    if path.is_dir():
        found = sorted(str(p) for p in path.glob("*.tar"))
        if not found:
            raise DataError(f"no .tar shards in {path}; point --data-dir at the shards (a folder, a pattern such as "
                            "'shards/train-{000000..000099}.tar', or a list file), or write them with 'barlowtwins "
                            "shard'")
        return found
    if path.is_file() and path.suffix != ".tar" and not tarfile.is_tarfile(path):  # a list file
        base = path.parent
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {path} as a shard list ({type(e).__name__}); give a .tar shard, a "
                            "folder of them, a pattern or a text file with one shard per line") from None
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        out = [ln if ln.startswith("pipe:") or os.path.isabs(ln) else str(base / ln) for ln in lines]
        if not out:
            raise DataError(f"the shard list {path} names no shards; one shard per line")
    else:
        out = []
        for item in expand_braces(str(path)):
            out += sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not out:
            raise DataError(f"the shard pattern {spec} matches nothing; check --data-dir")
    missing = [s for s in out if not s.startswith("pipe:") and not os.path.isfile(s)]
    if missing:
        raise DataError(f"shard {missing[0]} does not exist ({len(missing)} of {len(out)} missing, from {spec}); "
                        "check --data-dir, or copy the missing shards")
    return out


def cache_folder() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "barlowtwins" / "shards")


def local_copy(source: str) -> str:
    """A ``pipe:CMD`` shard streamed once into the cache folder (kept for the next run); a path as it is."""
    if not source.startswith("pipe:"):
        return source
    cmd = source[len("pipe:"):]
    folder = cache_folder()
    target = folder / (hashlib.sha256(cmd.encode()).hexdigest()[:20] + ".tar")
    if target.is_file():
        return str(target)
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(f".part{os.getpid()}")
    with open(part, "wb") as out:
        done = subprocess.run(cmd, shell=True, stdout=out, stderr=subprocess.PIPE)
    if done.returncode != 0:
        part.unlink(missing_ok=True)
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"the shard command '{cmd}' failed (exit {done.returncode}{': ' + why[-1][:200] if why else ''})"
                        "; check the command and its credentials")
    os.replace(part, target)
    return str(target)


# --------------------------------------------------------------------------------------------------------
# One sample inside a shard
# --------------------------------------------------------------------------------------------------------

_HANDLES: dict[tuple[int, str], object] = {}  # (process id, shard path) -> open file: forked workers open their own


def _handle(path: str):
    key = (os.getpid(), path)
    f = _HANDLES.get(key)
    if f is None:
        if len(_HANDLES) >= 64:  # a bounded set of open shards per process
            for k in [k for k in _HANDLES if k[0] == os.getpid()][:32]:
                _HANDLES.pop(k).close()
        f = _HANDLES[key] = open(path, "rb")  # noqa: SIM115 -- kept open for the next sample of this shard
    return f


class TarMember(SampleRef):
    """A sample's image inside a tar shard: the string ``<shard>:<member name>``, with the shard's path, the
    member data's offset and its size. One seek and one read (the shard's file stays open in this process)."""

    def __new__(cls, shard: str, member: str, offset: int, size: int):
        obj = super().__new__(cls, f"{shard}:{member}")
        obj.shard, obj.member, obj.offset, obj._size = shard, member, int(offset), int(size)
        return obj

    def __reduce__(self):
        return TarMember, (self.shard, self.member, self.offset, self._size)

    @property
    def size(self) -> int:
        return self._size

    def read_bytes(self) -> bytes:
        f = _handle(self.shard)
        f.seek(self.offset)
        data = f.read(self._size)
        if len(data) != self._size:
            err = DataError(f"corrupt or unreadable image {self} (the shard ends {self._size - len(data)} bytes "
                            "into it: truncated); re-create the shard")
            err.reason = "truncated shard"
            raise err
        return data


# --------------------------------------------------------------------------------------------------------
# Indexing a shard
# --------------------------------------------------------------------------------------------------------

@dataclass
class ShardIndex:
    """One shard's samples: (key, image member, data offset, size, label) each, in tar order; ``bytes``: the
    shard file's size; ``without_image``: keys skipped for having no image member."""

    path: str
    samples: list[tuple[str, str, int, int, int]]
    bytes: int
    without_image: list[str]


def sample_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: WebDataset's convention, the key ends at the first dot of the base name."""
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return (os.path.join(folder, stem) if folder else stem), ext.lower()


def _label(ext: str, data: bytes) -> int:
    text = data.decode("utf-8", errors="replace").strip()
    if ext == "cls":
        return int(text)
    value = json.loads(text)
    if isinstance(value, dict):
        value = value.get("label", value.get("cls", -1))
    return int(value)


def scan_shard(path: str) -> ShardIndex:
    """Index a tar shard from its headers (member data is skipped, not read; labels are read, they are tiny).
    A shard whose header chain is broken (truncated, not a tar) is one `DataError` naming it; a member whose data
    runs past the end of the file stays in the index and is an unreadable sample when read."""
    size = os.path.getsize(path)
    members: dict[str, dict] = {}
    order: list[str] = []
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                key, ext = sample_key(m.name)
                if key not in members:
                    members[key] = {}
                    order.append(key)
                members[key][ext] = (m.name, m.offset_data, m.size)
                if ext in LABEL_KEYS and m.offset_data + m.size <= size:
                    f = tf.fileobj
                    here = f.tell()
                    f.seek(m.offset_data)
                    members[key]["label:" + ext] = f.read(m.size)
                    f.seek(here)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"shard {path} is truncated or not a tar file ({type(e).__name__}: {str(e)[:120]}); "
                        "re-create it, or leave it out of --data-dir") from None
    samples, without = [], []
    for key in order:
        entry = members[key]
        image = next((entry[k] for k in IMAGE_KEYS if k in entry), None)
        if image is None:
            without.append(key)
            continue
        label = -1
        for ext in LABEL_KEYS:
            if "label:" + ext in entry:
                try:
                    label = _label(ext, entry["label:" + ext])
                except (ValueError, TypeError):
                    label = -1
                break
        samples.append((key, image[0], image[1], image[2], label))
    return ShardIndex(path, samples, size, without)


def read_manifest(folder: Path) -> dict:
    """``manifest.json`` of a shard folder by shard name ({} when there is none or it cannot be read)."""
    path = folder / MANIFEST
    try:
        data = json.loads(path.read_text())
        return {s["name"]: s for s in data.get("shards", [])} | {"": data}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def index_shard(path: str, manifests: dict) -> ShardIndex:
    """The shard's index from its folder's manifest when it describes this very file (name and size), else
    from its headers."""
    folder = Path(path).parent
    if folder not in manifests:
        manifests[folder] = read_manifest(folder)
    entry = manifests[folder].get(Path(path).name)
    size = os.path.getsize(path)
    if entry and entry.get("bytes") == size and "samples" in entry:
        return ShardIndex(path, [tuple(s) for s in entry["samples"]], size, [])
    return scan_shard(path)


# --------------------------------------------------------------------------------------------------------
# The data set and its order
# --------------------------------------------------------------------------------------------------------

class ShardImages(ImageFiles):
    """Samples of tar shards: an `ImageFiles` whose ``files`` are `TarMember` names, with the shards it holds and
    the shard of each sample (for `ShardOrder`); items are ``(transform(RGB PIL image), label)``."""

    def __init__(self, files: Sequence[TarMember], labels, classes: Sequence[str], name: str,
                 shards: Sequence[tuple[str, int, int]], shard_of: torch.Tensor, transform=None):
        super().__init__(files, torch.as_tensor(labels, dtype=torch.int64).tolist(), classes, name, transform)
        self.shards = list(shards)  # (shard file name, samples, bytes) each, in order
        self.shard_of = shard_of  # (n,) int64: the shard of each sample

    def subset(self, indices) -> "ShardImages":
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        return ShardImages([self.files[i] for i in idx.tolist()], self.labels[idx], self.classes, self.name,
                           self.shards, self.shard_of[idx], self.transform)

    def batch_order(self, batch_size: int, seed: int, rank: int, world_size: int) -> "ShardOrder":
        """The pretraining order (`ShardOrder`) for a per-rank batch of ``batch_size``."""
        return ShardOrder(self.shard_of, batch_size, seed=seed, rank=rank, world_size=world_size)


class ShardOrder(GlobalBatchSampler):
    """`GlobalBatchSampler` with a shard-local order: epoch e shuffles the shards (a function of seed + e), then
    the samples of each window of `WINDOW` consecutive shards among themselves. Global batches are cut from that
    order as from any other, so ranks, resumes and views are as for a folder."""

    def __init__(self, shard_of: torch.Tensor, batch_size: int, *, seed: int, rank: int, world_size: int,
                 window: int = WINDOW):
        super().__init__(len(shard_of), batch_size, shuffle=True, seed=seed, rank=rank, world_size=world_size)
        self.shard_of, self.window = shard_of, max(1, int(window))
        n_shards = int(shard_of.max()) + 1 if len(shard_of) else 0
        by_shard = torch.sort(shard_of, stable=True).indices  # sample indices grouped by shard, in index order
        self.members = list(torch.split(by_shard, torch.bincount(shard_of, minlength=n_shards).tolist()))

    def order(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        shards = torch.randperm(len(self.members), generator=g).tolist()
        parts = []
        for w in range(0, len(shards), self.window):
            block = torch.cat([self.members[s] for s in shards[w: w + self.window]])
            parts.append(block[torch.randperm(len(block), generator=g)])
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.int64)


def shard_dataset(spec: str, split: str | None = None, transform=None) -> ShardImages:
    """The samples of the shards ``spec`` names (see `shard_sources`). ``split``: replaces ``{split}`` in the
    pattern, or picks the sub-folder ``<spec>/<split>`` when there is one with shards."""
    spec = str(spec)
    if split and "{split}" in spec:
        spec = spec.replace("{split}", split)
    elif split and Path(spec).expanduser().is_dir() and (Path(spec).expanduser() / split).is_dir():
        spec = str(Path(spec).expanduser() / split)
    sources = [local_copy(s) for s in shard_sources(spec)]
    manifests: dict = {}
    files, labels, shard_rows, shard_of, without = [], [], [], [], 0
    for k, path in enumerate(sources):
        index = index_shard(path, manifests)
        without += len(index.without_image)
        for key, member, offset, size, label in index.samples:
            files.append(TarMember(path, member, offset, size))
            labels.append(label)
            shard_of.append(k)
        shard_rows.append((Path(path).name, len(index.samples), index.bytes))
    if without:
        print(f"warning: {without} samples in the shards of {spec} have no image member ({', '.join(IMAGE_KEYS)}) "
              "and are left out", file=sys.stderr)
    if not files:
        raise DataError(f"the shards of {spec} hold no images (looked for members {', '.join(IMAGE_KEYS)}); check "
                        "that they are WebDataset shards")
    folder_manifest = next((m[""] for m in manifests.values() if "" in m), {})
    classes = list(folder_manifest.get("classes", []))
    if not classes and max(labels) >= 0:
        classes = [str(i) for i in range(max(labels) + 1)]
    return ShardImages(files, labels, classes, spec, shard_rows, torch.tensor(shard_of, dtype=torch.int64),
                       transform)


__all__ = ["ShardImages", "ShardOrder", "TarMember", "expand_braces", "scan_shard", "shard_dataset", "shard_sources"]
