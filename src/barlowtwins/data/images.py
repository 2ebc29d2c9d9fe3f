"""Image files: finding, reading and checking them."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
from collections.abc import Callable, Sequence

from PIL import Image

from barlowtwins.errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
JPEG_MAGIC = b"\xff\xd8\xff"  # the first bytes of every JPEG file (SOI marker, then the next marker's 0xFF)


def is_jpeg(data) -> bool:
    """Whether a file's content (bytes, or a 1-D uint8 tensor of them) is a JPEG, by its first bytes."""
    head = bytes(data[:3]) if isinstance(data, (bytes, bytearray, memoryview)) else bytes(data[:3].tolist())
    return head == JPEG_MAGIC


# The formats PIL may open: everything else (EPS, PS and PDF, which run Ghostscript, and other exotic plugins) is
# refused. `read_image` is the one way the package opens an image file, always with this list or a part of it.
PIL_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def read_image(source: str | os.PathLike | bytes, name: str | None = None,
               draft: tuple[int, int] | Callable[[int, int], tuple[int, int] | None] | None = None,
               formats: Sequence[str] = PIL_FORMATS) -> Image.Image:
    """Decode an image file (a path, or its bytes) to a loaded RGB PIL image.

    ``formats`` is the allow-list of PIL formats tried (by content, whatever the file's name): `PIL_FORMATS` or a
    part of it; a format outside `PIL_FORMATS` is a `ValueError` (a bug, not a bad file). A file that is gone
    (deleted after its folder was listed) is a `DataError` saying it is missing.

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
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb"))
            img = Image.open(f, formats=list(formats))
            size = img.size
        except Exception as e:  # noqa: BLE001 -- decoders raise many types on hostile input; all mean "unreadable"
            raise unreadable(name, e) from None
        if callable(draft):
            draft = draft(*size)  # outside the handlers: an error here is a bug to report, not a bad file
        try:
            if draft is not None and img.format == "JPEG":
                img.draft("RGB", draft)
            img.load()
            return img if img.mode == "RGB" else img.convert("RGB")
        except Exception as e:  # noqa: BLE001
            raise unreadable(name, e) from None


def unreadable(name, e: Exception) -> DataError:
    """The one-line error for an image file that cannot be read: missing (``FileNotFoundError``) or undecodable."""
    if isinstance(e, FileNotFoundError):
        err = DataError(f"image {name} is missing (deleted?): it was listed but is not there now; restore it, or "
                        "start again so that the folder is listed anew")
        err.reason = "missing (deleted?)"
        return err
    text = str(e).strip().splitlines()
    reason = f"{type(e).__name__}: {text[0][:200] if text else ''}"
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
