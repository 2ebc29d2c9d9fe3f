"""Writing WebDataset shards from a folder of images (``barlowtwins shard``).

    >>> result = write_shards(build_dataset("images", "photos"), "shards", shard_bytes=500_000_000, seed=0)
    >>> result.shards, result.samples, result.skipped          # what was written and what was left out

The samples are shuffled once (``seed``) and cut into shards of about ``shard_bytes`` by their file sizes, a plan
made before anything is written, so a rerun makes the same plan. Each shard is a tar in the WebDataset layout:
``<position>.<jpg|png|webp>`` (the file's bytes as they are; other formats re-encoded as PNG) and, for labelled
data, ``<position>.cls``, plus ``<position>.json`` naming the source file. A shard is written to a temporary name
and renamed when complete, then recorded in ``manifest.json`` (its samples with their member offsets, its size and
SHA-256), which is rewritten atomically after every shard: an interrupted run, rerun, keeps the shards the
manifest lists and writes the others. Files that cannot be decoded are left out and listed, as in training.
Shards are written by ``workers`` processes in parallel.
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
from barlowtwins.data.shards import MANIFEST, read_manifest, scan_shard
from barlowtwins.errors import ConfigError, DataError

MANIFEST_VERSION = 1
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


def plan_shards(files: list[str], seed: int, shard_bytes: int) -> list[list[int]]:
    """The shards' sample indices: a permutation of the files (a function of ``seed``) cut into runs of about
    ``shard_bytes`` by file size (one ``stat`` per file; a file that cannot be stat'ed counts as empty)."""
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    plan, current, size = [], [], 0
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
    digest = hashlib.sha256()
    with open(tmp, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    os.replace(tmp, target)
    return {"name": name, "bytes": target.stat().st_size, "sha256": digest.hexdigest(), "samples": entry_samples,
            "skipped": skipped}


def _write_manifest(out: Path, meta: dict, entries: dict[str, dict]) -> None:
    data = {**meta, "shards": [entries[n] for n in sorted(entries)]}
    tmp = out / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, out / MANIFEST)


def write_shards(dataset, out: str | os.PathLike, shard_bytes: int, seed: int = 0, workers: int = 0,
                 prefix: str = "train") -> ShardResult:
    """Shards of ``dataset`` (an image-file data set: ``files``, ``labels``, ``classes``) in folder ``out``."""
    t0 = time.time()
    files = [str(f) for f in dataset.files]
    labels = dataset.labels.tolist()
    labelled = any(v >= 0 for v in labels)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # a shard or manifest an interrupted run left half-written
        stale.unlink(missing_ok=True)
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files]) if files else ""
    plan = plan_shards(files, seed, shard_bytes)
    width = max(6, len(str(len(plan) - 1)))
    names = [f"{prefix}-{k:0{width}d}.tar" for k in range(len(plan))]
    meta = {"version": MANIFEST_VERSION, "source": root, "seed": seed, "shard_bytes": shard_bytes,
            "planned": len(plan), "samples_planned": len(files), "classes": list(getattr(dataset, "classes", []))}
    previous = read_manifest(out)
    old_meta = previous.get("", {})
    entries: dict[str, dict] = {}
    if old_meta and all(old_meta.get(k) == meta[k] for k in ("seed", "shard_bytes", "planned", "samples_planned")):
        for name in names:  # complete shards of the same plan: kept (their size says the file is whole)
            e = previous.get(name)
            if e and (out / name).is_file() and (out / name).stat().st_size == e.get("bytes"):
                entries[name] = e
    kept = len(entries)
    positions = {i: p for p, i in enumerate(i for shard in plan for i in shard)}
    jobs = [(str(out), name, [(positions[i], files[i], labels[i]) for i in shard], root, labelled)
            for name, shard in zip(names, plan) if name not in entries]
    if workers > 0 and len(jobs) > 1:
        with ProcessPoolExecutor(workers) as pool:
            for entry in pool.map(write_one, jobs):
                entries[entry["name"]] = entry
                _write_manifest(out, meta, entries)
    else:
        for job in jobs:
            entry = write_one(job)
            entries[entry["name"]] = entry
            _write_manifest(out, meta, entries)
    _write_manifest(out, meta, entries)
    skipped = [s for e in entries.values() for s in e.get("skipped", [])]
    samples = sum(len(e["samples"]) for e in entries.values())
    return ShardResult(out, len(entries), samples, kept, skipped, time.time() - t0)


def verify_shard(path: str | os.PathLike, entry: dict) -> bool:
    """Whether a shard's headers index the samples its manifest entry lists (a check for tests and tools)."""
    index = scan_shard(str(path))
    return [tuple(s[:4]) for s in index.samples] == [(k, m, o, n) for k, m, o, n, _ in entry["samples"]]


__all__ = ["ShardResult", "parse_size", "plan_shards", "verify_shard", "write_shards"]
