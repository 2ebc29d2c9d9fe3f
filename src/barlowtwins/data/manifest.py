"""``manifest.json`` of a shard folder: what ``barlowtwins shard`` wrote, checked before it is trusted.

    >>> m = read_manifest(Path("shards/train"))        # None when there is none; a DataError when it is broken
    >>> m.entries["train-000000.tar"]["samples"][0]      # [key, image member, data offset, size, label]
    >>> m.plan                                          # what the shards were made from and how

A manifest lists, per shard, its samples (key, image member, offset of the member's data, its size, label), the
shard's byte count and SHA-256, and a SHA-256 of that sample list (``index_sha256``: a list edited by hand or
damaged on disk no longer matches it). Version 2 also records the plan: the source folder and a digest of its
listing (relative names, sizes and labels), the shard size, the shuffle seed and the name prefix; a rerun of the
writer keeps shards only under the same plan.

`check_manifest` refuses, in one line, anything a reader would otherwise trust blindly: wrong types, offsets or
sizes outside the shard file, members overlapping, a key that is not its member's, a key twice, a sample list
that does not match its digest. The reader then needs no other guard before it seeks and reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeGuard

from barlowtwins.errors import DataError

MANIFEST = "manifest.json"
VERSION = 2
_HEX64 = re.compile(r"[0-9a-f]{64}")
BLOCK = 512  # a tar header: the member's data starts one block after it


@dataclass
class Manifest:
    """A checked manifest: ``meta`` (everything but the shards), ``entries`` by shard name, its ``path``."""

    path: Path
    meta: dict
    entries: dict[str, dict] = field(default_factory=dict)

    @property
    def plan(self) -> dict:
        return dict(self.meta.get("plan") or {})

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.meta.get("classes") or []]


def index_digest(samples) -> str:
    """SHA-256 of a shard's sample list as the manifest stores it (JSON, no spaces)."""
    return hashlib.sha256(json.dumps([list(s) for s in samples], separators=(",", ":")).encode()).hexdigest()


def _int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def sample_key(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: WebDataset's convention, the key ends at the first dot of the base name."""
    folder, base = os.path.split(name)
    stem, _, ext = base.partition(".")
    return (os.path.join(folder, stem) if folder else stem), ext.lower()


def _check_entry(entry, where: str) -> str | None:
    """What is wrong with one shard entry, or None."""
    if not isinstance(entry, dict):
        return "a shard entry is not an object"
    name = entry.get("name")
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        return f"a shard entry has the name {name!r} (a file name in the folder is needed)"
    size, sha = entry.get("bytes"), entry.get("sha256")
    if not _int(size) or size < 0:
        return f"shard {name}: 'bytes' is {size!r}, not a byte count"
    if not isinstance(sha, str) or not _HEX64.fullmatch(sha):
        return f"shard {name}: 'sha256' is {str(sha)[:70]!r}, not a SHA-256"
    samples = entry.get("samples")
    if not isinstance(samples, list):
        return f"shard {name}: 'samples' is not a list"
    keys: set[str] = set()
    end = 0  # where the previous sample's data ends: the next header starts at or after it
    for k, s in enumerate(samples):
        if not isinstance(s, list) or len(s) != 5:
            return f"shard {name}: sample {k} is {str(s)[:60]}, not [key, member, offset, size, label]"
        key, member, offset, n, label = s
        if not isinstance(key, str) or not isinstance(member, str) or not key or sample_key(member)[0] != key:
            return f"shard {name}: sample {k} has key {key!r} and member {member!r} (the member must be the key's)"
        if not _int(offset) or not _int(n) or n < 0 or offset < end + BLOCK or offset + n > size:
            return (f"shard {name}: sample {k} ({member}) has offset {offset!r} and size {n!r}, outside the "
                    f"{size}-byte file or overlapping the sample before")
        if not (label is None or _int(label) or isinstance(label, str)):
            return f"shard {name}: sample {k} has the label {label!r}"
        if key in keys:
            return f"shard {name}: the key {key} is listed twice"
        keys.add(key)
        end = offset + n
    digest = entry.get("index_sha256")
    if digest is not None and digest != index_digest(samples):
        return f"shard {name}: its sample list does not match its index_sha256 (edited or damaged)"
    return None


def check_manifest(data, path: Path) -> Manifest:
    """``data`` (parsed JSON) as a `Manifest`, or one `DataError` saying what is wrong and what to do."""
    fix = (f"re-create the shards with 'barlowtwins shard' (or delete {path} to index the shards from their tar "
           "headers)")
    if not isinstance(data, dict):
        raise DataError(f"{path} is not a shard manifest (a JSON object is needed); {fix}")
    version, shards = data.get("version"), data.get("shards")
    if version not in (1, VERSION):
        raise DataError(f"{path} has manifest version {version!r}, not 1 or {VERSION}; {fix}")
    if not isinstance(shards, list):
        raise DataError(f"{path} has no list of shards; {fix}")
    classes = data.get("classes", [])
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise DataError(f"{path}: 'classes' is not a list of names; {fix}")
    entries: dict[str, dict] = {}
    for entry in shards:
        wrong = _check_entry(entry, str(path))
        if wrong is None and entry["name"] in entries:
            wrong = f"shard {entry['name']} is listed twice"
        if wrong:
            raise DataError(f"{path} is not valid: {wrong}; {fix}")
        entries[entry["name"]] = entry
    return Manifest(path, {k: v for k, v in data.items() if k != "shards"}, entries)


def read_manifest(folder: Path) -> Manifest | None:
    """The checked manifest of ``folder``; None when there is none; one `DataError` when it cannot be read or is
    not valid (`check_manifest`)."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {str(e)[:100]}); re-create the shards with "
                        f"'barlowtwins shard' (or delete {path} to index the shards from their tar headers)") from None
    return check_manifest(data, path)


def write_manifest(folder: Path, meta: dict, entries: dict[str, dict]) -> None:
    """``manifest.json`` with ``meta`` and the ``entries`` in name order, written atomically."""
    data = {**meta, "shards": [entries[n] for n in sorted(entries)]}
    tmp = Path(folder) / f".{MANIFEST}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, Path(folder) / MANIFEST)


__all__ = ["BLOCK", "MANIFEST", "Manifest", "VERSION", "check_manifest", "index_digest",
           "read_manifest", "sample_key", "write_manifest"]
