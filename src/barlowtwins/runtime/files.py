"""Atomic files: a file is either its old or its new content, never half of one."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


class _HashingWriter:
    """A file wrapper that hashes what is written through it (the checksum costs no second read)."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def temp_path(path: Path) -> Path:
    """The temporary name ``save_atomic`` writes ``path`` under (``.<name>.tmp-<pid>``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix, for writers that look at it), then rename
    it over ``path``: a crash mid-write leaves the previous file intact. Used for every non-checkpoint output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_temp(obj, path: str | os.PathLike) -> tuple[Path, str]:
    """``torch.save`` to ``path``'s temporary name, fsync; return (that file, its sha256). The file is removed
    again if writing fails (disk full included), and the error raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, writer.sha256.hexdigest()


def save_atomic(obj, path: str | os.PathLike) -> str:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``; returns the
    file's sha256.

    A crash mid-write leaves the previous file intact: the rename is atomic on POSIX and Windows.
    """
    tmp, digest = write_temp(obj, path)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
