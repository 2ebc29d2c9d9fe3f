"""A data set's fingerprint: what a checkpoint keeps to tell, at a resume, whether the data set changed.

    >>> saved = fingerprint(dataset)              # stored with the checkpoint (a small JSON-able dict)
    >>> change = compare(saved, fingerprint(dataset_now))
    >>> change                                    # None, or one line such as
    'the data set changed since the checkpoint was written: 1003 images then, 1000 now'

A resumed run indexes its samples by position, so a file added, removed or renamed (or the same files in another
order) makes batch k of an epoch other images than the interrupted run's. A folder data set is fingerprinted by
its file names relative to their common folder (the data may be moved or mounted elsewhere), in index order,
and optionally their sizes (one ``stat`` per file; nothing is opened or decoded). An in-memory data set is
fingerprinted by its name, shape, dtype, labels and a hash of at most `MEMORY_SAMPLES` images spread over it.
Any other data set by its length and type.
"""

from __future__ import annotations

import hashlib
import os

import torch

from barlowtwins.data.images import SampleRef

VERSION = 1
MEMORY_SAMPLES = 64


def _sha(parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


def _relative(files: list[str]) -> list[str]:
    if not files:
        return []
    try:
        root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    except ValueError:  # paths on different drives
        return [f.replace(os.sep, "/") for f in files]
    return [os.path.relpath(os.path.abspath(f), root).replace(os.sep, "/") for f in files]


def fingerprint(dataset, sizes: bool = False) -> dict:
    """A JSON-able dict that changes when the samples the data set indexes change (see the module's text).

    ``sizes=True`` adds a hash of the file sizes (a file replaced by another of the same name), at one ``stat``
    per file: cheap on a local disk, slower on a network file system with millions of files."""
    count = len(dataset)
    files = getattr(dataset, "files", None)
    if files is not None:
        rel = _relative([str(f) for f in files])
        out = {"version": VERSION, "kind": "files", "count": count,
               "files_sha256": _sha(sorted(rel)), "order_sha256": _sha(rel)}
        if sizes:
            out["sizes_sha256"] = _sha(_size(f) for f in files)
        shards = getattr(dataset, "shards", None)
        if shards:  # shards: their names, sample counts and byte sizes (a shard re-written in place shows here)
            out["shards_sha256"] = _sha(f"{name}\t{count}\t{size}" for name, count, size in shards)
        index = getattr(dataset, "index_sha256", "")
        if index:  # every member, offset, size and label, and the SHA-256 each shard's manifest records
            out["shard_index_sha256"] = index
        return out
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):
        n = len(images)
        k = min(n, MEMORY_SAMPLES)
        picks = sorted({round(i * (n - 1) / max(k - 1, 1)) for i in range(k)})  # the first, the last, between
        labels = getattr(dataset, "labels", None)
        return {"version": VERSION, "kind": "memory", "count": count, "name": str(getattr(dataset, "name", "")),
                "shape": list(images.shape[1:]), "dtype": str(images.dtype),
                "content_sha256": _sha(images[i].contiguous().numpy().tobytes() for i in picks),
                "labels_sha256": _sha([labels.to(torch.int64).contiguous().numpy().tobytes()]
                                      if isinstance(labels, torch.Tensor) else [])}
    return {"version": VERSION, "kind": type(dataset).__name__, "count": count}


def _size(path: str) -> int:
    if isinstance(path, SampleRef):  # a sample inside a shard or table: the size its index holds
        return path.size
    try:
        return os.stat(path).st_size
    except OSError:
        return -1  # a file gone since the listing: its absence is the change


def compare(saved: dict | None, now: dict) -> str | None:
    """One line saying how the data set changed since ``saved`` was taken, or None when nothing did.

    None too when there is nothing to compare: no saved fingerprint (a checkpoint from before they were kept), or
    one of another version of this format. Only what both fingerprints hold is compared."""
    if not saved or saved.get("version") != now.get("version"):
        return None
    head = "the data set changed since the checkpoint was written"
    if saved.get("kind") != now.get("kind"):
        return f"{head}: {saved.get('kind')} then, {now.get('kind')} now"
    a, b = saved.get("count"), now.get("count")
    if a != b:
        return f"{head}: {a} images then, {b} now"
    for key, what in (("name", "its name"), ("shape", "the image shape"), ("dtype", "the image type"),
                      ("files_sha256", "the list of files (names differ)"),
                      ("order_sha256", "the order of its files (the same names, indexed in another order)"),
                      ("sizes_sha256", "the size of some files (replaced files?)"),
                      ("shards_sha256", "the shards (their names, sample counts or sizes)"),
                      ("shard_index_sha256", "the shards' index or manifest (members, offsets, sizes, labels or "
                                             "recorded SHA-256)"),
                      ("content_sha256", "the images"), ("labels_sha256", "the labels")):
        if key in saved and key in now and saved[key] != now[key]:
            shown = f" ({saved[key]} then, {now[key]} now)" if key in ("name", "shape", "dtype") else ""
            return f"{head}: {what}{shown}, with {b} images in both"
    return None
