"""WebDataset tar shards as a data set with random access: exact, resumable, and read shard by shard.

    >>> ds = shard_dataset("shards/train-{000000..000127}.tar")      # or a folder of .tar files, or a list file
    >>> ds.files[0]                                                  # 'shards/train-000000.tar:n01440764_10026.jpg'
    >>> img, label = ds[0]                                           # RGB PIL image, label from .cls/.json or -1
    >>> sampler = ds.batch_order(batch_size=64, seed=0, rank=0, world_size=8)   # the pretraining order

A shard is a tar file in the WebDataset layout: the members of one sample share a key (the member name up to
the first dot of its base name), the image is the ``jpg``/``jpeg``/``png``/``webp`` member, a label the ``cls``
member (an integer or a class name as text) or the ``json`` member (``{"label": k}`` or ``{"cls": k}``), read
by `barlowtwins.data.labels.read_labels` (the class names a manifest records number the classes). ``pipe:CMD`` sources
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
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import torch

from barlowtwins.data.image_files import ImageFiles
from barlowtwins.data.images import SampleRef
from barlowtwins.data.labels import read_labels
from barlowtwins.data.manifest import BLOCK, Manifest, read_manifest, sample_key
from barlowtwins.data.sampling import GlobalBatchSampler
from barlowtwins.errors import DataError, field_error
from barlowtwins.runtime.files import file_sha256
from barlowtwins.runtime.log import get_logger

log = get_logger(__name__)

IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")  # the members that hold a sample's image, in order of preference
LABEL_KEYS = ("cls", "json")
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


def _list_line(line: str) -> str:
    """A shard list's line without its comment: a line whose first character (after spaces) is ``#``, and the
    text from a ``#`` that follows a space (``a.tar  # note``); a ``#`` inside a name stays."""
    text = line.strip()
    if text.startswith("#"):
        return ""
    return re.split(r"\s+#", text, maxsplit=1)[0].strip()


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
            raise field_error(lambda n: f"no .tar shards in {path}; point {n('data_dir')} at the shards (a folder, a "
                                        "pattern such as 'shards/train-{000000..000099}.tar', or a list file), or "
                                        "write them with 'barlowtwins shard'", DataError)
        return found
    if path.is_file() and path.suffix != ".tar" and not tarfile.is_tarfile(path):  # a list file
        base = path.parent
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read {path} as a shard list ({type(e).__name__}); give a .tar shard, a "
                            "folder of them, a pattern or a text file with one shard per line") from None
        lines = [_list_line(ln) for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        out = [ln if ln.startswith("pipe:") or os.path.isabs(ln) else str(base / ln) for ln in lines]
        if not out:
            raise DataError(f"the shard list {path} names no shards; one shard per line")
    else:
        out = []
        for item in expand_braces(str(path)):
            out += sorted(glob.glob(item)) if any(c in item for c in "*?[") else [item]
        if not out:
            raise field_error(lambda n: f"the shard pattern {spec} matches nothing; check {n('data_dir')}", DataError)
    dirs = [s for s in out if not s.startswith("pipe:") and os.path.isdir(s)]
    if dirs:
        raise field_error(lambda n: f"{dirs[0]} is a folder, not a shard (from {spec}); name .tar files, or give the "
                                    f"folder itself as {n('data_dir')}", DataError)
    missing = [s for s in out if not s.startswith("pipe:") and not os.path.isfile(s)]
    if missing:
        raise field_error(lambda n: f"shard {missing[0]} does not exist ({len(missing)} of {len(out)} missing, from "
                                    f"{spec}); check {n('data_dir')}, or copy the missing shards", DataError)
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
    if target.is_file() and _whole_tar(target):
        return str(target)
    target.unlink(missing_ok=True)  # an empty or broken copy an earlier version kept: fetched again
    folder.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{os.getpid()}.part")
    with open(part, "wb") as out:
        done = subprocess.run(cmd, shell=True, stdout=out, stderr=subprocess.PIPE)
    why = done.stderr.decode(errors="replace").strip().splitlines()
    if done.returncode != 0:
        part.unlink(missing_ok=True)
        raise DataError(f"the shard command '{cmd}' failed "
                        f"(exit {done.returncode}{': ' + why[-1][:200] if why else ''})"
                        "; check the command and its credentials")
    if not _whole_tar(part):  # exit 0 but no shard (nothing written, cut short): never cached
        n = part.stat().st_size
        part.unlink(missing_ok=True)
        wrote = "nothing" if n == 0 else f"{n} bytes that are not a whole tar file"
        raise DataError(f"the shard command '{cmd}' exited 0 but wrote {wrote}; check that it writes the shard to "
                        "its standard output")
    os.replace(part, target)
    return str(target)


def _whole_tar(path: Path) -> bool:
    """Whether ``path`` is a non-empty tar whose headers read to the end (a cut-short stream is not)."""
    try:
        if path.stat().st_size == 0:
            return False
        with tarfile.open(path, "r:") as tf:
            return sum(1 for _ in tf) > 0
    except (tarfile.TarError, OSError, EOFError):
        return False


# --------------------------------------------------------------------------------------------------------
# One sample inside a shard
# --------------------------------------------------------------------------------------------------------

_HANDLES: dict[tuple[int, str], BinaryIO] = {}  # (process id, shard path) -> open file: forked workers open their own


def _handle(path: str) -> BinaryIO:
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

    shard: str
    member: str
    offset: int
    _size: int

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
        """The member's data, read with its tar header in one read; the header must name this member and its
        size (a manifest whose offsets do not match the shard is an unreadable sample, never another image)."""
        f = _handle(self.shard)
        head = BLOCK if self.offset >= BLOCK else 0
        f.seek(self.offset - head)
        data = f.read(head + self._size)
        if len(data) != head + self._size:
            err = DataError(f"corrupt or unreadable image {self} (the shard ends {head + self._size - len(data)} "
                            "bytes into it: truncated); re-create the shard")
            err.reason = "truncated shard"
            raise err
        if head and not header_matches(data[:BLOCK], self.member, self._size):
            err = DataError(f"corrupt or unreadable image {self} (the tar header at its offset names another "
                            "member: the manifest does not match the shard); re-create the shard or its manifest")
            err.reason = "manifest does not match the shard"
            raise err
        return data[head:]


def header_matches(block: bytes, member: str, size: int) -> bool:
    """Whether a 512-byte tar header is ``member``'s, of ``size`` bytes (a long name kept in an extended header
    before it: the short name here is a piece of the member's)."""
    try:
        info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.TarError:
        return False
    if info.size != size:
        return False
    return info.name == member or (len(member.encode()) > 99 and bool(info.name) and
                                   (member.startswith(info.name) or member.endswith(info.name)))


# --------------------------------------------------------------------------------------------------------
# Indexing a shard
# --------------------------------------------------------------------------------------------------------

@dataclass
class ShardIndex:
    """One shard's samples: (key, image member, data offset, size, raw label) each, in tar order; ``bytes``: the
    shard file's size; ``without_image``: keys skipped for having no image member; ``duplicates``: samples whose
    key an earlier sample of the shard already had; ``lost``: samples its manifest lists that the file no longer
    holds (cut short); ``sha256``: the shard's digest its manifest records ("" without one)."""

    path: str
    samples: list[tuple[str, str, int, int, object]]
    bytes: int
    without_image: list[str]
    duplicates: int = 0
    lost: int = 0
    sha256: str = ""


def _raw_label(ext: str, data: bytes):
    """A label member's value as stored (text of ``.cls``; ``label``/``cls`` of a ``.json`` object, or the JSON
    value itself), read by `read_labels` with the others; a ``.json`` that holds no label: None."""
    if ext == "cls":
        return data
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None  # metadata that is not JSON text: no label
    if isinstance(value, dict):
        return value.get("label", value.get("cls"))
    return value if isinstance(value, (int, float, str)) else None


def scan_shard(path: str) -> ShardIndex:
    """Index a tar shard from its headers (member data is skipped, not read; labels are read, they are tiny).
    As in WebDataset's reader, consecutive members with one key are a sample; a key met again later (or an
    extension twice) starts another sample, counted in ``duplicates``. A shard whose header chain is broken
    (truncated, not a tar) is one `DataError` naming it; a member whose data runs past the end of the file stays
    in the index and is an unreadable sample when read."""
    size = os.path.getsize(path)
    groups: list[tuple[str, dict]] = []
    seen: set[str] = set()
    duplicates = 0
    try:
        with tarfile.open(path, "r:") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                key, ext = sample_key(m.name)
                if not groups or groups[-1][0] != key or ext in groups[-1][1]:
                    if key in seen:
                        duplicates += 1
                    seen.add(key)
                    groups.append((key, {}))
                entry = groups[-1][1]
                entry[ext] = (m.name, m.offset_data, m.size)
                if ext in LABEL_KEYS and m.offset_data + m.size <= size and m.size <= 1 << 20:
                    f = tf.fileobj
                    here = f.tell()
                    f.seek(m.offset_data)
                    entry["label:" + ext] = f.read(m.size)
                    f.seek(here)
    except (tarfile.TarError, OSError, EOFError) as e:
        why = f"{type(e).__name__}: {str(e)[:120]}"
        raise field_error(lambda n: f"shard {path} is truncated or not a tar file ({why}); re-create it, or leave it "
                                    f"out of {n('data_dir')}", DataError) from None
    samples, without = [], []
    for key, entry in groups:
        image = next((entry[k] for k in IMAGE_KEYS if k in entry), None)
        if image is None:
            without.append(key)
            continue
        label = next((_raw_label(ext, entry["label:" + ext]) for ext in LABEL_KEYS if "label:" + ext in entry), None)
        samples.append((key, image[0], image[1], image[2], label))
    return ShardIndex(path, samples, size, without, duplicates)


def _headers_match(path: str, samples, picks=3) -> bool:
    """Whether the tar headers at a few recorded offsets (first, middle, last) name their members."""
    if not samples:
        return True
    chosen = {0, len(samples) // 2, len(samples) - 1}
    with open(path, "rb") as f:
        for k in sorted(chosen)[:picks]:
            _, member, offset, size, _ = samples[k]
            f.seek(offset - BLOCK)
            if not header_matches(f.read(BLOCK), member, size):
                return False
    return True


def index_shard(path: str, manifests: dict) -> ShardIndex:
    """The shard's index from its folder's checked manifest (`barlowtwins.data.manifest`) when it describes this
    very file (name and size, and the tar headers at a few of its offsets), else from its headers. A manifest
    that lists more samples than the file now holds gives ``lost``."""
    folder = Path(path).parent
    if folder not in manifests:
        manifests[folder] = read_manifest(folder)
    manifest: Manifest | None = manifests[folder]
    entry = manifest.entries.get(Path(path).name) if manifest is not None else None
    size = os.path.getsize(path)
    if entry and entry["bytes"] == size:
        assert manifest is not None  # an entry comes from a manifest
        samples = [tuple(s) for s in entry["samples"]]
        if not _headers_match(path, samples):
            raise DataError(f"{manifest.path} does not match {path} (the tar headers at its offsets name other "
                            "members); re-create the shards with 'barlowtwins shard', or delete the manifest to "
                            "index the shards from their headers")
        return ShardIndex(path, samples, size, [], sha256=entry["sha256"])
    index = scan_shard(path)
    if entry:  # the file is not the one the manifest describes: cut short, or re-written
        index.lost = max(0, len(entry["samples"]) - len(index.samples))
    return index


# --------------------------------------------------------------------------------------------------------
# The data set and its order
# --------------------------------------------------------------------------------------------------------

class ShardImages(ImageFiles):
    """Samples of tar shards: an `ImageFiles` whose ``files`` are `TarMember` names, with the shards it holds and
    the shard of each sample (for `ShardOrder`); items are ``(transform(RGB PIL image), label)``."""

    def __init__(self, files: Sequence[TarMember], labels, classes: Sequence[str], name: str,
                 shards: Sequence[tuple[str, int, int]], shard_of: torch.Tensor, transform=None,
                 named_classes: bool = True, index_sha256: str = "", checks: Sequence[tuple[str, str, int]] = ()):
        super().__init__(files, torch.as_tensor(labels, dtype=torch.int64).tolist(), classes, name, transform)
        self.shards = list(shards)  # (shard file name, samples, bytes) each, in order
        self.shard_of = shard_of  # (n,) int64: the shard of each sample
        self.named_classes = named_classes  # False: the classes are the label numbers (no names recorded)
        self.index_sha256 = index_sha256  # of every shard's index (members, offsets, sizes, labels; manifest digests)
        self.checks = list(checks)  # (shard path, manifest SHA-256 or "", samples lost) each, for verify_integrity

    def subset(self, indices) -> "ShardImages":
        idx = torch.as_tensor(list(indices), dtype=torch.int64)
        return ShardImages([self.files[i] for i in idx.tolist()], self.labels[idx], self.classes, self.name,
                           self.shards, self.shard_of[idx], self.transform, self.named_classes, self.index_sha256,
                           self.checks)

    def verify_integrity(self) -> None:
        """``--strict-data``: one `DataError` for a shard cut short (samples its manifest lists are gone) or one
        whose bytes differ from its manifest's SHA-256 (each shard with a manifest is read once, in full)."""
        lost = [(p, n) for p, _, n in self.checks if n]
        if lost:
            more = f" ({len(lost)} shards cut short)" if len(lost) > 1 else ""
            raise field_error(lambda n: f"shard {lost[0][0]} is truncated: {lost[0][1]} of the samples its manifest "
                                        f"lists are gone{more}; re-create or copy it again, or run without "
                                        f"{n('strict_data')} to train on what is left", DataError)
        for path, sha, _ in self.checks:
            if sha and file_sha256(path) != sha:
                raise DataError(f"shard {path} does not match the SHA-256 its manifest records (damaged or "
                                "replaced); re-create or copy it again")

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
    files, raw, shard_rows, shard_of, without, duplicates, checks = [], [], [], [], 0, 0, []
    for k, path in enumerate(sources):
        index = index_shard(path, manifests)
        without += len(index.without_image)
        duplicates += index.duplicates
        for key, member, offset, size, label in index.samples:
            files.append(TarMember(path, member, offset, size))
            raw.append(label)
            shard_of.append(k)
        shard_rows.append((Path(path).name, len(index.samples), index.bytes))
        checks.append((path, index.sha256, index.lost))
    if without:
        log.warning(f"warning: {without} samples in the shards of {spec} have no image member "
                    f"({', '.join(IMAGE_KEYS)}) and are left out")
    if duplicates:
        log.warning(f"warning: {duplicates} samples in the shards of {spec} repeat a key an earlier sample of their "
                    "shard has; each is read as a sample of its own (re-create the shards with unique keys)")
    lost = [(p, n) for p, _, n in checks if n]
    if lost:
        log.warning(f"warning: {sum(n for _, n in lost)} samples that the manifest lists are gone from {len(lost)} "
                    f"truncated shard{'s' if len(lost) > 1 else ''} ({lost[0][0]} ...); training on the rest "
                    "(--strict-data makes this an error; re-create or copy the shards again)")
    if not files:
        raise DataError(f"the shards of {spec} hold no images (looked for members {', '.join(IMAGE_KEYS)}); check "
                        "that they are WebDataset shards")
    recorded = next((m.classes for m in manifests.values() if m is not None and m.classes), None)
    labels, classes, named = read_labels(raw, f"the shards of {spec}", recorded)
    digest = hashlib.sha256()  # what the samples are: members, offsets, sizes, labels; each manifest's SHA-256
    for (path, sha, _), (name, _, _) in zip(checks, shard_rows):
        digest.update(f"{name}\t{sha}\n".encode())
    for f, label in zip(files, labels):
        digest.update(f"{f.member}\t{f.offset}\t{f.size}\t{label}\n".encode("utf-8", "surrogateescape"))
    return ShardImages(files, labels, classes, spec, shard_rows, torch.tensor(shard_of, dtype=torch.int64),
                       transform, named, digest.hexdigest(), checks)


__all__ = ["ShardImages", "ShardOrder", "TarMember", "expand_braces", "scan_shard", "shard_dataset", "shard_sources"]
