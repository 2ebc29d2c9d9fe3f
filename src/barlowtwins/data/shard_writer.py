"""Writing WebDataset shards from a folder of images (``barlowtwins shard``).

    >>> result = write_shards(build_dataset("images", "photos"), "shards", shard_bytes=500_000_000, seed=0)
    >>> result.shards, result.samples, result.skipped          # what was written and what was left out

The samples are shuffled once (``seed``) and cut into shards of about ``shard_bytes`` by their file sizes, a plan
made before anything is written, so a rerun makes the same plan. Each shard is a tar in the WebDataset layout:
``<position>.<jpg|png|webp>`` (the file's bytes as they are; other formats re-encoded as PNG) and, for labelled
data, ``<position>.cls``, plus ``<position>.json`` naming the source file. A shard is written to a temporary name
and renamed when complete, then recorded in ``manifest.json`` (its samples with their member offsets, its size and
SHA-256), which is rewritten atomically after every shard.

The writer owns its output folder. The manifest records the plan (the source's listing digest, the shard size,
the seed, the name prefix). A rerun under the same plan keeps a shard only when its bytes still match the
SHA-256 recorded for it (an interrupted run, rerun, finishes; a damaged shard is written again); under another
plan it refuses in one line saying what changed, unless ``overwrite`` (then the old shards are removed first).
Shards it wrote beyond the plan are removed; ``.tar`` files it did not write (not in the manifest, not named
``<prefix>-<number>.tar``) make it refuse, since training on the folder would read them too. Files that cannot
be decoded are left out and listed, as in training. Shards are written by ``workers`` processes in parallel.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from barlowtwins.data.images import read_file_bytes, read_image
from barlowtwins.data.manifest import VERSION, index_digest, read_manifest, write_manifest
from barlowtwins.data.shards import scan_shard
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.runtime.files import file_sha256

_FORMAT_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # stored as they are; other formats become PNG
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "kib": 2 ** 10, "mib": 2 ** 20,
          "gib": 2 ** 30, "k": 10 ** 3, "m": 10 ** 6, "g": 10 ** 9}


def parse_size(text: str) -> int:
    """``500MB`` / ``1.5GB`` / ``64MiB`` / ``1000000`` -> bytes; one line for anything else."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise ConfigError(f"--shard-size {text}: give a size such as 500MB, 1GB or 64MiB")
    return int(float(m.group(1)) * _UNITS[unit])


@dataclass
class ShardResult:
    out: Path
    shards: int
    samples: int
    kept: int  # shards found complete from an earlier run and kept
    skipped: list[dict] = field(default_factory=list)  # {"file", "reason"} of every file left out
    seconds: float = 0.0
    rewritten: list[str] = field(default_factory=list)  # shards of an earlier run whose bytes no longer matched
    removed: int = 0  # files of an earlier run removed (another plan with overwrite, or beyond the plan)
    replaced_plan: str = ""  # what changed since the earlier run, when overwrite replaced its shards


def plan_shards(files: list[str], seed: int, shard_bytes: int) -> list[list[int]]:
    """The shards' sample indices: a permutation of the files (a function of ``seed``) cut into runs of about
    ``shard_bytes`` by file size (one ``stat`` per file; a file that cannot be stat'ed counts as empty)."""
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    plan: list[list[int]] = []
    current: list[int] = []
    size = 0
    for i in order:
        try:
            n = os.stat(files[i]).st_size + 1024  # the tar headers of its members
        except OSError:
            n = 1024
        if current and size + n > shard_bytes:
            plan.append(current)
            current, size = [], 0
        current.append(i)
        size += n
    if current:
        plan.append(current)
    return plan


def _encoded(path: str) -> tuple[bytes, str]:
    """(bytes to store, member extension) of one file; a `DataError` when it does not decode."""
    data = read_file_bytes(path)
    read_image(data, name=str(path), draft=(1, 1))  # decodes (at the smallest scale): a bad file stops here
    with Image.open(io.BytesIO(data)) as probe:  # bytes that just decoded: only the format is read
        fmt = probe.format
    if fmt in _FORMAT_EXT:
        return data, _FORMAT_EXT[fmt]
    buf = io.BytesIO()
    read_image(data, name=str(path)).save(buf, format="PNG")  # BMP, TIFF, GIF ...: lossless PNG
    return buf.getvalue(), "png"


def _member(tf: tarfile.TarFile, name: str, data: bytes) -> int:
    """Add ``data`` as member ``name``; returns the offset of its data in the file."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # no time stamps: the same input, the same bytes
    start = tf.offset
    tf.addfile(info, io.BytesIO(data))
    return start + tarfile.BLOCKSIZE  # USTAR with short names: one header block before the data


def write_one(job: tuple) -> dict:
    """Write shard ``name`` of (position, file, label) samples into ``out``; returns its manifest entry."""
    out, name, samples, root, labelled = job
    target = Path(out) / name
    tmp = target.with_name(f".{name}.{os.getpid()}.tmp")
    entry_samples, skipped = [], []
    with open(tmp, "wb") as raw:
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for position, path, label in samples:
                try:
                    data, ext = _encoded(path)
                except DataError as e:
                    skipped.append({"file": path, "reason": getattr(e, "reason", str(e))})
                    continue
                key = f"{position:09d}"
                offset = _member(tf, f"{key}.{ext}", data)
                entry_samples.append([key, f"{key}.{ext}", offset, len(data), label])
                if labelled:
                    _member(tf, f"{key}.cls", str(label).encode())
                rel = os.path.relpath(path, root) if root else path
                _member(tf, f"{key}.json", json.dumps({"file": rel, "label": label}).encode())
        raw.flush()
        os.fsync(raw.fileno())
    digest = file_sha256(tmp)
    os.replace(tmp, target)
    return {"name": name, "bytes": target.stat().st_size, "sha256": digest, "samples": entry_samples,
            "index_sha256": index_digest(entry_samples), "skipped": skipped}


def check_prefix(prefix: str) -> str:
    """``prefix`` when it can start a shard's file name in ``--out``; one line otherwise."""
    if not prefix or prefix.startswith(".") or re.search(r"[/\\\x00-\x1f{}*?\[\]]", prefix) or len(prefix) > 200:
        raise ConfigError(f"--prefix {prefix!r}: give a plain name (no folders, no leading dot, no wildcards or "
                          "braces); the shards are written as <prefix>-000000.tar in --out")
    return prefix


def source_digest(files: list[str], labels: list[int], classes: list[str], root: str) -> str:
    """SHA-256 of what the shards are made from: each file's name relative to ``root``, its size and its label,
    in order, and the class names (a source moved elsewhere keeps its digest)."""
    h = hashlib.sha256()
    for f, label in zip(files, labels):
        try:
            size = os.stat(f).st_size
        except OSError:
            size = -1
        h.update(f"{os.path.relpath(f, root) if root else f}\t{size}\t{label}\n".encode("utf-8", "surrogateescape"))
    h.update(json.dumps(classes).encode())
    return h.hexdigest()


_PLAN_WORDS = {"source_sha256": "the source (its files, their sizes or labels)", "samples": "the number of images",
               "shard_bytes": "--shard-size", "seed": "--seed", "prefix": "--prefix", "shards": "the number of shards"}


def _plan_change(old: dict, new: dict) -> str:
    """What differs between two plans, in words ("" when nothing does)."""
    if not old:
        return "the manifest records no plan (written by an older version)"
    parts: list[str] = []
    for key, words in _PLAN_WORDS.items():
        if key == "shards" and parts:
            continue  # follows from the rest
        if old.get(key) != new.get(key):
            shown = "" if key == "source_sha256" else f" ({old.get(key)} then, {new.get(key)} now)"
            parts.append(words + shown)
    return ", ".join(parts)  # the source's path is not compared: the same files moved make the same shards


def write_shards(dataset, out: str | os.PathLike, shard_bytes: int, seed: int = 0, workers: int = 0,
                 prefix: str = "train", overwrite: bool = False) -> ShardResult:
    """Shards of ``dataset`` (an image-file data set: ``files``, ``labels``, ``classes``) in folder ``out`` (see
    the module docstring for what a rerun keeps, rewrites, removes or refuses)."""
    t0 = time.time()
    prefix = check_prefix(prefix)
    files = [str(f) for f in dataset.files]
    labels = dataset.labels.tolist()
    classes = [str(c) for c in getattr(dataset, "classes", [])]
    labelled = any(v >= 0 for v in labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # a shard or manifest an interrupted run left half-written
        stale.unlink(missing_ok=True)
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]) if files else ""
    plan = plan_shards(files, seed, shard_bytes)
    width = max(6, len(str(len(plan) - 1)))
    names = [f"{prefix}-{k:0{width}d}.tar" for k in range(len(plan))]
    meta: dict = {"version": VERSION, "source": root, "classes": classes,
            "plan": {"source": root, "source_sha256": source_digest(files, labels, classes, root),
                     "samples": len(files), "shard_bytes": shard_bytes, "seed": seed, "prefix": prefix,
                     "shards": len(plan)}}
    ours = re.compile(rf"{re.escape(prefix)}-\d{{6,}}\.tar")
    try:
        previous = read_manifest(out)
    except DataError as e:
        if not overwrite:
            raise DataError(f"{e}; or rerun with --overwrite to write the shards again") from None
        previous = None
    recorded = set(previous.entries) if previous is not None else set()
    foreign = sorted(p.name for p in out.glob("*.tar") if p.name not in recorded and not ours.fullmatch(p.name))
    if foreign:
        raise DataError(f"{out} holds {len(foreign)} .tar file{'s' if len(foreign) > 1 else ''} this command did not "
                        f"write ({', '.join(foreign[:3])}); training on the folder would read them too: move them, "
                        "or choose another --out")
    entries: dict[str, dict] = {}
    rewritten: list[str] = []
    removed = 0
    change = ""
    if previous is not None:
        change = _plan_change(previous.plan, meta["plan"])
        if change and not overwrite:
            raise ConfigError(f"{out} holds the shards of another plan ({change}); rerun with --overwrite to replace "
                              "them, or choose another --out")
        for name, old in previous.entries.items():
            path = out / name
            if change or name not in names:  # another plan, or beyond this one: the earlier run's file goes
                if path.is_file():
                    path.unlink()
                    removed += 1
            elif path.is_file() and path.stat().st_size == old["bytes"] and file_sha256(path) == old["sha256"]:
                entries[name] = old
            else:
                rewritten.append(name)
    for path in out.glob("*.tar"):  # ours by name but in no manifest (a kill before it was recorded), not planned
        if path.name not in names and ours.fullmatch(path.name):
            path.unlink()
            removed += 1
    kept = len(entries)
    positions = {i: p for p, i in enumerate(i for shard in plan for i in shard)}
    jobs = [(str(out), name, [(positions[i], files[i], labels[i]) for i in shard], root, labelled)
            for name, shard in zip(names, plan) if name not in entries]
    write_manifest(out, meta, entries)  # what is on disk now, before anything new is written
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for entry in pool.map(write_one, jobs):
                entries[entry["name"]] = entry
                write_manifest(out, meta, entries)
    else:
        for job in jobs:
            entry = write_one(job)
            entries[entry["name"]] = entry
            write_manifest(out, meta, entries)
    write_manifest(out, meta, entries)
    skipped = [s for e in entries.values() for s in e.get("skipped", [])]
    samples = sum(len(e["samples"]) for e in entries.values())
    return ShardResult(out, len(entries), samples, kept, skipped, time.time() - t0, rewritten, removed,
                       change if previous is not None else "")


def verify_shard(path: str | os.PathLike, entry: dict) -> bool:
    """Whether a shard's headers index the samples its manifest entry lists (a check for tests and tools)."""
    index = scan_shard(str(path))
    return [tuple(s[:4]) for s in index.samples] == [(k, m, o, n) for k, m, o, n, _ in entry["samples"]]


__all__ = ["ShardResult", "parse_size", "plan_shards", "verify_shard", "write_shards"]
