"""Atomic files: a file is either its old or its new content, never half of one.

Every file the package writes goes through `atomic_write`: the content is written under a temporary name beside
the target (``.<name>.tmp-<pid>-<n><suffix>``: unique per process and per call, so two processes, or two threads,
writing the same path never share a temporary file), flushed to disk (fsync), then renamed over the target. A
crash or an error mid-write leaves the previous file as it was and removes the temporary file; a temporary file
left by a killed process is recognised by `stale_temp_pid` and removed by the trainer when a run starts.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from barlowtwins.errors import ConfigError

T = TypeVar("T")

_COUNTER = itertools.count()  # next() on it is atomic under the GIL: unique names across threads
# the counter and suffix are optional: earlier versions wrote ``.<name>.tmp-<pid>``, which a run resumed by this
# one still has to clean up
_TEMP = re.compile(r"^\..+\.tmp-(\d+)(?:-\d+)?(?:\.[^.]*)?$")


def _process_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back (once, at import)
    os.umask(mask)
    return mask


# The mode every file we write gets, as a plain open() would give it: some writers (safetensors) create their
# file 0600, which a cluster group could not read.
FILE_MODE = 0o666 & ~_process_umask()

# Errors of a full or read-only disk, whichever library's writer met them: torch's zip writer raises
# RuntimeError("... file write failed"), safetensors its own SafetensorError naming the OS error.
_DISK_FULL_WORDS = ("no space left", "storagefull", "code: 28", "disk quota")


class WriteError(OSError):
    """A file could not be written (disk full, read-only file system, no permission): an `OSError` with the
    path and, where the writing library hid it, the errno recovered from its message."""


def as_write_error(e: BaseException, path: str | os.PathLike) -> OSError:
    """``e`` (raised while writing ``path``) as an `OSError` naming the path: an OSError keeps its errno;
    another library's error becomes `WriteError` with ENOSPC when its text or the free space says the disk is
    full, else EIO."""
    if not isinstance(e, OSError) and isinstance(e.__context__, OSError):
        e = e.__context__  # torch's zip writer hides the OS error it met behind its own RuntimeError
    if isinstance(e, OSError):
        if e.filename is None:
            return WriteError(e.errno, e.strerror or str(e), str(path))
        return e
    text = str(e).lower()
    full = any(w in text for w in _DISK_FULL_WORDS)
    if not full:
        try:
            full = shutil.disk_usage(Path(path).parent).free < (1 << 20)
        except OSError:
            pass
    if full:
        return WriteError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return WriteError(errno.EIO, f"{type(e).__name__}: {first[:200]}", str(path))


def _is_write_failure(e: Exception) -> bool:
    """An error that means the bytes did not reach the disk: an OSError, torch's zip writer's RuntimeError, or
    safetensors' error about the file (not a programming error in the caller's ``write``)."""
    if isinstance(e, OSError) or isinstance(e.__context__, OSError):
        return True
    text = str(e).lower()
    if isinstance(e, RuntimeError) and ("write" in text or "inline_container" in text
                                        or any(w in text for w in _DISK_FULL_WORDS)):
        return True
    return type(e).__name__ == "SafetensorError" and any(w in text for w in ("io", "write", "os {"))


def describe_os_error(e: OSError, doing: str = "write") -> str:
    """One line for a failed read or write: what, where, why, and what to do about it."""
    where = f" {e.filename}" if e.filename else ""
    why = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space and run the same command again"
    elif e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = "make the location writable or choose another one" if doing == "write" else "check the permissions"
    elif e.errno == errno.ENAMETOOLONG:
        fix = "use a shorter name (at most 255 bytes per folder or file name)"
    elif e.errno == errno.ENOENT:
        fix = "check the path"
    else:
        fix = "check the path and the disk"
    return f"cannot {doing}{where} ({why}); {fix}"


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


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:  # a read-only file system refuses even this; the failure that brought us here is what counts
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[Path], T], *,
                 before_replace: Callable[[], None] | None = None) -> T:
    """``write(tmp)`` the content to a temporary file beside ``path``, fsync it, then rename it over ``path``;
    return what ``write`` returned.

    ``before_replace`` runs between the fsync and the rename (the checkpoint store shifts older files there, so
    they move only once the new one is safely on disk). On any error, in ``write``, the fsync, ``before_replace``
    or the rename, the temporary file is removed and the error raised; ``path`` keeps its previous content. A
    failure of the writing library (torch's zip writer, safetensors) is raised as an `OSError`
    (`as_write_error`), so a full disk reads the same whoever met it. The file gets `FILE_MODE`.
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        result = write(tmp)
        os.chmod(tmp, FILE_MODE)
        _fsync_file(tmp)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except Exception as e:
        _remove(tmp)
        if _is_write_failure(e):
            raise as_write_error(e, path) from e
        raise
    except BaseException:
        _remove(tmp)
        raise
    _fsync_folder(path.parent)
    return result


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """`atomic_write` of a text file."""
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding=encoding))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to a text file whole, or not at all: on a failed write (disk full, read-only
    file system) the file is cut back to its previous length, so no torn line is left, and the `OSError` raised."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
    try:
        start = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise
    finally:
        os.close(fd)


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
            torch.save(obj, writer)  # type: ignore[arg-type]  # torch.save takes any object with write and flush
        return writer.sha256.hexdigest()

    return atomic_write(path, write, before_replace=before_replace)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


NAME_MAX = 255  # bytes in one folder or file name on the usual file systems


def is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:  # a name too long to look up: `check_writable` says so in one line
        return False


def _short(text: str, most: int = 40) -> str:
    return text if len(text) <= most else text[:most] + "..."


def check_writable(path: str | os.PathLike, flag: str = "--output") -> Path:
    """``path`` if a file can be written there (by `atomic_write`), else a one-line `ConfigError` naming ``flag``
    and the fix; the commands call it before any work, so that a bad place fails at once rather than after it.

    Checks: every folder or file name fits in 255 bytes (the file's temporary name too); ``path`` is not a folder;
    the nearest existing folder on the way can be written (a temporary file is created in it and removed).
    Nothing else is created: missing folders are made when the file is written.
    """
    path = Path(os.path.abspath(Path(path).expanduser()))
    for part in path.parts[1:]:
        n = len(os.fsencode(part))
        if n > NAME_MAX:
            raise ConfigError(f"{flag}: the name '{_short(part)}' is {n} bytes, more than a file system allows "
                              f"({NAME_MAX}); choose a shorter name")
    tmp = temp_name(path)
    extra = len(os.fsencode(tmp.name)) - len(os.fsencode(path.name))
    if len(os.fsencode(tmp.name)) > NAME_MAX:
        raise ConfigError(f"{flag}: the file name '{_short(path.name)}' is {len(os.fsencode(path.name))} bytes; at "
                          f"most {NAME_MAX - extra} fit (it is first written under a longer temporary name); "
                          "choose a shorter name")
    if is_folder(path):
        raise ConfigError(f"{flag} {path} is a folder; name a file (e.g. {path / 'result.json'})")
    folder = path.parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: {folder} is a file, not a folder; choose another location")
    probe = tmp if folder == path.parent else temp_name(folder / ".barlowtwins-write-check")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{flag}: {describe_os_error(OSError(e.errno, e.strerror, str(path)))}") from None
    return path
