"""Image files: finding, reading and checking them.

A sample need not be a file of its own: a `SampleRef` is a string that names it (``shards/train-000003.tar:
img0042.jpg``, ``train.parquet:row17``) and knows how to read its bytes. Every reader here (`read_image`,
`read_file_bytes`, `first_decodable`, `scan_images`) takes one wherever it takes a path, so the data paths, the
evaluation commands and the bad-file policy treat samples inside shards exactly as files in a folder.
"""

from __future__ import annotations

import contextlib
import errno
import io
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
from PIL import Image

from barlowtwins.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class SampleRef(str):
    """A sample stored inside a bigger file, named by this string; `read_bytes` reads its encoded image. Subclasses
    (`data.shards.TarMember`, `data.hf.TableRow`) must be picklable: loader workers receive them."""

    def read_bytes(self) -> bytes:
        raise NotImplementedError

    @property
    def size(self) -> int:
        """The encoded image's size in bytes (-1 when not known without reading it)."""
        return -1



# The formats PIL may open: everything else (EPS, PS and PDF, which run Ghostscript, and other exotic plugins) is
# refused. `read_image` is the one way the package opens an image file, always with this list or a part of it.
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")

# Errors of the storage, not of the file's content (a network file system that hiccups, a disk that times out):
# a read failing with one of these is tried again, IO_TRIES times in all, waiting IO_BACKOFF_S, then 4x that, ...
# before the file counts as unreadable. Decode errors (OSError without an errno) are never tried again.
TRANSIENT_ERRNOS = frozenset(getattr(errno, n) for n in ("EIO", "EAGAIN", "ESTALE", "ETIMEDOUT", "EBUSY",
                                                         "ECONNRESET", "ECONNABORTED", "ENETRESET", "EREMOTEIO",
                                                         "ENOLCK") if hasattr(errno, n))
IO_TRIES = 4
IO_BACKOFF_S = 0.05


def is_transient(e: BaseException) -> bool:
    """Whether an error is the storage's (worth another try), not the file content's."""
    return isinstance(e, OSError) and not isinstance(e, FileNotFoundError) and e.errno in TRANSIENT_ERRNOS


def _try_again(e: BaseException, attempt: int, tries: int) -> bool:
    """After a failed read number ``attempt`` (from 0) of ``tries``: whether to read again (a transient storage
    error with tries left; waits the backoff first)."""
    if not is_transient(e) or attempt >= tries - 1:
        return False
    time.sleep(IO_BACKOFF_S * 4 ** attempt)
    return True


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes (or a `SampleRef`'s), with the retries of `read_image` on transient storage errors; a
    `DataError` otherwise."""
    for attempt in range(IO_TRIES):
        try:
            if isinstance(path, SampleRef):
                return path.read_bytes()
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            if not _try_again(e, attempt, IO_TRIES):
                raise unreadable(str(path), e, tries=attempt + 1) from None
    raise AssertionError("unreachable")


def to_rgb(img: Image.Image) -> Image.Image:
    """A loaded PIL image as RGB, high bit depths scaled to 8 bits first (``convert`` alone clips them at 255).

    16-bit modes (``I;16*``, what 16-bit PNG and TIFF files open as) keep their top 8 bits; 32-bit integers
    (``I``) are read as 16-bit values when they fit 0..65535, else scaled from their own min..max; floats
    (``F``) in 0..1 are multiplied by 255, other ranges scaled from their min..max."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        arr = (np.asarray(img).astype(np.uint16) >> 8).astype(np.uint8)
    elif img.mode in ("I", "F"):
        a = np.asarray(img)
        if img.mode == "F":
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (a.min().item(), a.max().item()) if a.size else (0, 0)
        if img.mode == "I" and lo >= 0 and hi <= 65535:
            arr = (a >> 8).astype(np.uint8)
        elif img.mode == "F" and lo >= 0 and hi <= 1:
            arr = np.rint(a * 255).astype(np.uint8)
        else:
            arr = np.rint((a.astype(np.float64) - lo) * (255 / (hi - lo) if hi > lo else 0)).astype(np.uint8)
    else:
        return img.convert("RGB")
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")


def read_image(source: str | os.PathLike | bytes, name: str | None = None,
               draft: tuple[int, int] | Callable[[int, int], tuple[int, int] | None] | None = None,
               formats: Sequence[str] = PIL_FORMATS) -> Image.Image:
    """Decode an image file (a path, or its bytes) to a loaded RGB PIL image.

    ``formats`` is the allow-list of PIL formats tried (by content, whatever the file's name): `PIL_FORMATS` or a
    part of it; a format outside `PIL_FORMATS` is a `ValueError` (a bug, not a bad file). A file that is gone
    (deleted after its folder was listed) is a `DataError` saying it is missing.

    A read failing with a storage error (EIO, EAGAIN, ESTALE, ETIMEDOUT, ...: `TRANSIENT_ERRNOS`) is tried again,
    `IO_TRIES` reads in all with a short backoff, before it is a `DataError`; decode errors are not tried again.
    16-bit images are scaled to 8 bits (`to_rgb`), not clipped.

    Any other failure (not an image, corrupt or truncated data, a format outside the list, more pixels than
    ``PIL.Image.MAX_IMAGE_PIXELS`` allows (DecompressionBombError), or anything else a decoder raises on
    hostile bytes) becomes one `DataError` naming the file. ``draft=(w, h)`` lets libjpeg decode a JPEG at the
    smallest 1/2, 1/4 or 1/8 scale that is still at least that size (DCT scaling: much less work); a callable
    ``draft(width, height)`` is given the header's size first and returns that size or None (one open of
    the file for the header and the decode).
    """
    extra = [f for f in formats if f not in PIL_FORMATS]
    if extra or isinstance(formats, str):
        raise ValueError(f"read_image opens only {', '.join(PIL_FORMATS)} (a sequence of them), not {formats!r}")
    name = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if isinstance(source, SampleRef):  # a sample inside a shard or table: its bytes, with the storage retries
        source = read_file_bytes(source)
    tries = 1 if isinstance(source, bytes) else IO_TRIES  # bytes in memory: no storage to try again
    for attempt in range(tries):
        with contextlib.ExitStack() as stack:
            try:
                raw: BinaryIO = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
                f = stack.enter_context(raw)  # closed by the stack, on every way out
                img = Image.open(f, formats=list(formats))
                size = img.size
            except Exception as e:  # noqa: BLE001 -- decoders raise many types on hostile input: "unreadable"
                if _try_again(e, attempt, tries):
                    continue
                raise unreadable(name, e, tries=attempt + 1) from None
            if callable(draft):
                draft = draft(*size)  # outside the handlers: an error here is a bug to report, not a bad file
            try:
                if draft is not None and img.format == "JPEG":
                    img.draft("RGB", draft)
                img.load()
                return to_rgb(img)
            except Exception as e:  # noqa: BLE001
                if _try_again(e, attempt, tries):
                    continue
                raise unreadable(name, e, tries=attempt + 1) from None
    raise AssertionError("unreachable")


def unreadable(name, e: Exception, tries: int = 1) -> DataError:
    """The one-line error for an image file that cannot be read: missing (``FileNotFoundError``), a storage error
    that lasted ``tries`` reads (`is_transient`), or undecodable."""
    if isinstance(e, FileNotFoundError):
        err = DataError(f"image {name} is missing (deleted?): it was listed but is not there now; restore it, or "
                        "start again so that the folder is listed anew")
        err.reason = "missing (deleted?)"
        return err
    text = str(e).strip().splitlines()
    reason = f"{type(e).__name__}: {text[0][:200] if text else ''}"
    if is_transient(e):
        reason = f"I/O error, {tries} tr{'ies' if tries != 1 else 'y'}: {reason}"
        err = DataError(f"cannot read image {name} ({reason}); check the disk or network file system holding it")
        err.reason = reason
        return err
    err = DataError(f"corrupt or unreadable image {name} ({reason}); remove or replace the file")
    err.reason = reason
    return err


def first_decodable(files: Sequence[str], where: str) -> int:
    """The index of the first file of ``files`` that decodes; a `DataError` when none does (checked before
    any work starts, so a folder of unreadable files stops at once instead of failing every batch)."""
    for i, f in enumerate(files):
        try:
            read_image(f, draft=(1, 1))  # the smallest DCT scale: parses the whole file, decodes little
            return i
        except DataError:
            continue
    raise DataError(f"none of the {len(files)} image files in {where} can be decoded (e.g. {files[0]}); "
                    "check that they are images")


def scan_images(files: Sequence[str], workers: int = 0) -> list[tuple[str, str]]:
    """Decode every file (at the smallest DCT scale for JPEGs); return ``(file, reason)`` for each that fails.

    The check ``--strict-data`` runs before training. ``workers`` > 0 spreads it over processes."""
    if workers > 0 and len(files) > 64:
        with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
            results = pool.map(_check_one, files, chunksize=64)
            # Let the workers finish on their own before the pool is torn down: `Pool.__exit__` alone sends them
            # SIGTERM, which the stop-signal handlers they inherit from the trainer catch and keep running,
            # and the exit then waits for them forever (seen as an occasional hang of --strict-data).
            pool.close()
            pool.join()
    else:
        results = [_check_one(f) for f in files]
    return [(f, r) for f, r in zip(files, results) if r is not None]


def _check_one(path: str) -> str | None:
    try:
        read_image(path, draft=(1, 1))
        return None
    except DataError as e:
        return str(e)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def folder_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """The identity of a real folder (device, inode), the same through any symlink to it; None if it cannot be
    read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def find_image_files(top: str | os.PathLike, seen: set | None = None) -> list[str]:
    """The image files under ``top`` at any depth, by name only (nothing is opened or decoded).

    The order is a function of the names alone, whatever order the file system lists them in: a folder's files
    sorted by name, then its sub-folders one after the other, sorted by name, each walked the same way (so
    ranks on different nodes index the same list). Hidden files and folders (``.name``) are skipped. Symlinks to
    folders are followed, each real folder once (a link to a folder already walked, such as a parent, adds
    nothing: no file is listed twice, a loop ends). ``seen`` holds the `folder_key` of folders not to walk (and
    gets those walked); a folder that cannot be listed is skipped, as ``os.walk`` does."""
    seen = set() if seen is None else seen
    files: list[str] = []
    stack = [os.fspath(top)]
    while stack:
        folder = stack.pop()
        key = folder_key(folder)
        if key is None or key in seen:
            continue
        seen.add(key)
        try:
            with os.scandir(folder) as it:
                entries = sorted(((e.name, e) for e in it if not e.name.startswith(".")), key=lambda t: t[0])
        except OSError:
            continue
        subfolders = []
        for n, e in entries:
            try:
                is_dir = e.is_dir()  # follows symlinks
            except OSError:
                is_dir = False
            if is_dir:
                subfolders.append(os.path.join(folder, n))
            elif is_image_file(n):
                files.append(os.path.join(folder, n))
        stack += reversed(subfolders)  # popped in sorted order
    return files
