"""Atomic files: a file is either its old or its new content, never half of one.

Every file the package writes goes through `atomic_write`: the content is written under a temporary name beside
the target (``.<name>.tmp-<pid>-<n><suffix>``: unique per process and per call, so two processes, or two threads,
writing the same path never share a temporary file), flushed to disk (fsync), then renamed over the target. A
crash or an error mid-write leaves the previous file as it was and removes the temporary file; a temporary file
left by a killed process is recognised by `stale_temp_pid` and removed by the trainer when a run starts.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")

_COUNTER = itertools.count()  # next() on it is atomic under the GIL: unique names across threads
# the counter and suffix are optional: earlier versions wrote ``.<name>.tmp-<pid>``, which a run resumed by this
# one still has to clean up
_TEMP = re.compile(r"^\..+\.tmp-(\d+)(?:-\d+)?(?:\.[^.]*)?$")


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``, with the same suffix (``np.save`` and some exporters pick the
    format from it, or append their own suffix to a name without it)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{next(_COUNTER)}{path.suffix}")


def stale_temp_pid(name: str) -> int | None:
    """The writing process's id when ``name`` is one of `atomic_write`'s temporary names, else None."""
    m = _TEMP.match(name)
    return int(m.group(1)) if m else None


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:  # write access: Windows refuses to flush a read-only handle
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable (POSIX); silently skipped where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], T], *,
                 before_replace: Callable[[], None] | None = None) -> T:
    """``write(tmp)`` the content to a temporary file beside ``path``, fsync it, then rename it over ``path``;
    return what ``write`` returned.

    ``before_replace`` runs between the fsync and the rename (the checkpoint store shifts older files there, so
    they move only once the new one is safely on disk). On any error, in ``write``, the fsync, ``before_replace``
    or the rename, the temporary file is removed and the error raised; ``path`` keeps its previous content.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        result = write(tmp)
        _fsync_file(tmp)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)
    return result


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_write` of a binary file."""
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


class _HashingWriter:
    """A file wrapper that hashes what is written through it (the checksum costs no second read)."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_atomic(obj, path: str | os.PathLike, *, before_replace: Callable[[], None] | None = None) -> str:
    """`atomic_write` of ``torch.save(obj)``; returns the file's sha256, computed while writing."""

    def write(tmp: Path) -> str:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
        return writer.sha256.hexdigest()

    return atomic_write(path, write, before_replace=before_replace)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
