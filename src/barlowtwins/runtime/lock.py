"""One writer per run folder: an advisory lock held for the life of a run.

`FolderLock` takes an exclusive ``flock`` on ``<folder>/.barlowtwins.lock`` without waiting. The kernel releases
it when the process ends in any way (kill -9 included), so a lock can never outlive its run; the file itself
stays and holds who took it (pid, host, start time), which names the holder to a second run that is refused,
and tells the next run when its predecessor ended without releasing (a crash, a kill): such a stale record is
reported and taken over. A clean release empties the file instead of deleting it (deleting a lock file that
another process is about to open would let two processes lock two different files).

Where the file system has no ``flock`` (some network mounts answer ENOLCK; Windows has no ``fcntl``) the run
goes ahead unlocked, with a warning.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path
from types import ModuleType

from barlowtwins.errors import ConfigError

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".barlowtwins.lock"


def _holder() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv[:1] + sys.argv[1:3])[:200]}


def _describe(record: dict) -> str:
    return f"pid {record.get('pid', '?')} on {record.get('host', '?')} (started {record.get('started', '?')})"


def _read(fd: int) -> dict | None:
    """The holder record in an open lock file (None when empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
    except OSError:
        return None
    try:
        record = json.loads(raw.decode("utf-8", errors="replace")) if raw.strip() else None
    except json.JSONDecodeError:
        return {"pid": "?", "host": "?", "started": "?"}
    return record if isinstance(record, dict) else None


class FolderLock:
    """An exclusive, non-blocking lock on a folder (see the module docstring). Use as a context manager or call
    `acquire` / `release`; ``stale`` holds the record of a predecessor that never released."""

    def __init__(self, folder: str | os.PathLike, name: str = LOCK_NAME, what: str = "--out"):
        self.folder, self.path, self.what = Path(folder), Path(folder) / name, what
        self.fd: int | None = None
        self.stale: dict | None = None
        self.unlocked_reason: str | None = None

    def acquire(self) -> "FolderLock":
        """Take the lock or raise a one-line `ConfigError` naming the process that holds it."""
        if fcntl is None:
            self.unlocked_reason = "this platform has no flock"
            return self
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = _describe(holder) if holder else "another process"
                raise ConfigError(f"run folder {self.folder} is in use by {who}; wait for that run to end, or "
                                  f"choose another {self.what}") from None
            self.unlocked_reason = f"the file system cannot lock files ({e.strerror or e})"
            return self
        self.stale = _read(fd)
        record = json.dumps(_holder()).encode()
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, record)
        self.fd = fd
        return self

    def release(self) -> None:
        """Empty the record and drop the lock (the kernel drops it anyway when the process ends)."""
        if self.fd is None:
            return
        assert fcntl is not None  # a descriptor is kept only once flock took the lock
        fd, self.fd = self.fd, None
        try:
            os.ftruncate(fd, 0)
            # explicitly: forked data-loader workers share this open file, and would otherwise keep it locked
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError:
            pass
        finally:
            os.close(fd)

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def describe_stale(record: dict) -> str:
    """The warning for a lock record left by a run that ended without releasing it."""
    return f"the previous run in this folder ({_describe(record)}) ended without finishing cleanly; taking over"
