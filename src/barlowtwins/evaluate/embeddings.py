"""Embeddings of a folder or data set, and nearest-neighbour retrieval over them.

An embeddings file is three files side by side:

* ``emb.npy``: float32 (N, D) backbone features (not normalised), rows in data set order;
* ``emb.index.csv`` (or ``emb.index.parquet``): one row per image: ``row, path, label`` (the file's absolute
  path, or ``<dataset>:<split>:<i>`` for in-memory data sets);
* ``emb.meta.json``: what made them (checkpoint source and SHA-256, architecture, image size, mean/std, data
  set), so that `barlowtwins neighbors` embeds its queries with the same backbone and preprocessing.

Retrieval is cosine similarity: both sides L2-normalised, one matrix product, ``torch.topk``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageOps

from barlowtwins.data.bad_files import note_unreadable, short_reason
from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.images import read_image
from barlowtwins.errors import BarlowTwinsError, ConfigError, DataError
from barlowtwins.evaluate.features import eval_transform, prepare_batch
from barlowtwins.models.backbones import MAX_IMAGE_SIZE, MAX_WIDTH, STEMS, create_backbone
from barlowtwins.runtime.files import atomic_write, write_text_atomic
from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.runtime.hardware import autocast
from barlowtwins.runtime.memory_format import is_channels_last

INDEX_FORMATS = ("auto", "csv", "parquet")


def sidecar_paths(output: str | os.PathLike) -> dict[str, Path]:
    """``emb.npy`` -> the paths of its index (csv and parquet) and metadata files."""
    out = Path(output)
    stem = out.with_suffix("") if out.suffix == ".npy" else out
    return {"npy": stem.with_suffix(".npy"), "csv": Path(f"{stem}.index.csv"),
            "parquet": Path(f"{stem}.index.parquet"), "meta": Path(f"{stem}.meta.json")}


def index_entries(dataset, dataset_name: str, split: str | None) -> list[str]:
    """What each row is: an absolute file path, or ``<dataset>:<split>:<i>`` for in-memory images."""
    files = getattr(dataset, "files", None)
    if files is not None:
        return [os.path.abspath(f) for f in files]
    return [f"{dataset_name}:{split}:{i}" for i in range(len(dataset))]


def resolve_index_format(fmt: str) -> str:
    if fmt not in INDEX_FORMATS:
        raise ConfigError(f"unknown index format '{fmt}'; choose one of {', '.join(INDEX_FORMATS)}")
    try:
        import pyarrow  # noqa: F401
        has_arrow = True
    except ImportError:
        has_arrow = False
    if fmt == "parquet" and not has_arrow:
        raise ConfigError("--index-format parquet needs pyarrow: pip install 'barlowtwins[parquet]' (or use csv)")
    return "parquet" if fmt == "parquet" or (fmt == "auto" and has_arrow) else "csv"


def write_embeddings(output: str | os.PathLike, features: torch.Tensor, entries: list[str], labels: torch.Tensor,
                     meta: dict, index_format: str = "auto") -> dict[str, Path]:
    """Write (N, D) features as float32 ``.npy`` with its index and metadata; returns the paths written."""
    if features.ndim != 2 or len(features) != len(entries):
        raise ValueError(f"expected ({len(entries)}, D) features, got {tuple(features.shape)}")
    if nonfinite_names([("features", features)]):
        raise DataError("the backbone produced non-finite features; check the checkpoint (is it diverged?)")
    paths = sidecar_paths(output)
    fmt = resolve_index_format(index_format)
    array = features.float().cpu().numpy()
    atomic_write(paths["npy"], lambda tmp: np.save(tmp, array))
    rows = [(i, e, int(y)) for i, (e, y) in enumerate(zip(entries, labels.tolist()))]
    if fmt == "csv":
        def write_csv(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["row", "path", "label"])
                w.writerows(rows)
        atomic_write(paths["csv"], write_csv)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"row": [r[0] for r in rows], "path": [r[1] for r in rows], "label": [r[2] for r in rows]})
        atomic_write(paths["parquet"], lambda tmp: pq.write_table(table, tmp))
    stale = paths["parquet" if fmt == "csv" else "csv"]  # an index of an earlier run in the other format
    if stale.exists():
        stale.unlink()
    meta = {**meta, "count": int(array.shape[0]), "dim": int(array.shape[1]), "dtype": "float32",
            "index": paths[fmt].name}
    write_text_atomic(paths["meta"], json.dumps(meta, indent=2) + "\n")
    return {"npy": paths["npy"], "index": paths[fmt], "meta": paths["meta"]}


@dataclass
class Embeddings:
    """An embeddings file read back: (N, D) float32 features, the N index entries, and the metadata (checked:
    see `read_embeddings`)."""

    features: np.ndarray
    entries: list[str]
    meta: dict


# What a meta.json may ask for is bounded (it decides the network built and the size images are resized to, so a
# damaged or hand-edited one must not ask for terabytes): the architecture's bounds, declared once in models.
IMAGE_SIZE_RANGE = (8, MAX_IMAGE_SIZE)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:200] if text else type(e).__name__)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}); check its permissions") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise DataError(f"{path} is not valid JSON ({_first_line(e)}); it is damaged: re-run barlowtwins embed") \
            from None
    if not isinstance(meta, dict):
        raise DataError(f"{path} is not an embeddings metadata file (a JSON object); re-run barlowtwins embed")
    return meta


def _read_array(path: Path) -> np.ndarray:
    """The (N, D) float array of ``path`` as float32, read through a memory map first: the header's shape is
    checked against the file's real size before anything is allocated."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, TypeError, SyntaxError) as e:
        why = "it holds Python objects, which are never loaded" if "pickle" in str(e) else _first_line(e)
        raise DataError(f"{path} is not a readable .npy array ({why}); it is damaged or cut short: "
                        "re-run barlowtwins embed") from None
    if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype.kind != "f":
        what = f"{arr.dtype} array of shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise DataError(f"{path} holds a {what}, not (N, D) float features; re-run barlowtwins embed")
    try:
        features = np.array(arr, dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({_first_line(e)}); re-run barlowtwins embed") from None
    if not np.isfinite(features).all():
        raise DataError(f"{path} holds non-finite values (NaN or inf); re-run barlowtwins embed")
    return features


def _read_index(index: Path) -> list[str]:
    try:
        if index.suffix == ".parquet":
            try:
                import pyarrow.parquet as pq
            except ImportError:
                raise DataError(f"{index} is a parquet index: pip install 'barlowtwins[parquet]' to read it") \
                    from None
            return [str(p) for p in pq.read_table(index, columns=["path"]).column("path").to_pylist()]
        with open(index, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if "path" not in (reader.fieldnames or []):
                raise DataError(f"index file {index} has no 'path' column; re-run barlowtwins embed")
            return [row["path"] for row in reader]
    except DataError:
        raise
    except (OSError, ValueError, csv.Error, KeyError) as e:  # UnicodeDecodeError and pyarrow's errors included
        raise DataError(f"index file {index} cannot be read ({_first_line(e)}); it is damaged: re-run "
                        "barlowtwins embed") from None


def _number(value, kind, low, high) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool) and low <= value <= high


def check_meta(meta: dict, features: np.ndarray, path: Path) -> dict:
    """``meta`` if every field a reader uses is of the right type and within bounds and matches ``features``;
    else a one-line `DataError` naming the field."""
    def bad(field: str, why: str):
        raise DataError(f"{path}: '{field}' {why}; the file is damaged or was edited: re-run barlowtwins embed")

    n, d = features.shape
    for field, actual in (("count", n), ("dim", d)):
        if field in meta and meta[field] != actual:
            bad(field, f"is {meta[field]!r} but the array holds {actual}")
    arch = meta.get("arch", {})
    if arch is None:
        arch = {}
    if not isinstance(arch, dict):
        bad("arch", "is not a mapping")
    if arch.get("backbone") is not None and not isinstance(arch["backbone"], str):
        bad("arch.backbone", "is not a backbone name")
    if arch.get("stem") is not None and arch["stem"] not in STEMS:
        bad("arch.stem", f"is {str(arch['stem'])[:40]!r}, not one of {', '.join(STEMS)}")
    if arch.get("width") is not None and not _number(arch["width"], int, 1, MAX_WIDTH):
        bad("arch.width", f"is {str(arch['width'])[:40]!r}, not a whole number of channels from 1 to {MAX_WIDTH}")
    if meta.get("image_size") is not None and not _number(meta["image_size"], int, *IMAGE_SIZE_RANGE):
        bad("image_size", f"is {str(meta['image_size'])[:40]!r}, not a whole number of pixels from "
                          f"{IMAGE_SIZE_RANGE[0]} to {IMAGE_SIZE_RANGE[1]}")
    for field in ("mean", "std"):
        v = meta.get(field)
        if v is None:
            continue
        if not (isinstance(v, list) and len(v) in (1, 3) and all(_number(x, (int, float), -1e3, 1e3) for x in v)):
            bad(field, "is not a list of 1 or 3 numbers")
        if field == "std" and min(v) <= 0:
            bad(field, "has a value that is not positive")
    for field in ("checkpoint", "checkpoint_sha256", "data_dir"):
        if meta.get(field) is not None and not isinstance(meta[field], str):
            bad(field, "is not text")
    return meta


def read_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read ``emb.npy`` and its index and metadata, with a one-line `DataError` when a part is missing, damaged
    or inconsistent: the array is checked against its file's size before it is read, the metadata's fields for
    type and bounds (`check_meta`) and against the array, and the index must sit beside the array."""
    paths = sidecar_paths(path)
    if not paths["npy"].is_file():
        raise DataError(f"embeddings file {paths['npy']} does not exist; write it with barlowtwins embed")
    if not paths["meta"].is_file():
        raise DataError(f"{paths['meta']} is missing; it is written by barlowtwins embed next to {paths['npy'].name}")
    meta = _read_meta(paths["meta"])
    name = meta.get("index", paths["csv"].name)
    if not isinstance(name, str) or name != os.path.basename(name) or not name.endswith((".csv", ".parquet")):
        raise DataError(f"{paths['meta']}: 'index' is {str(name)[:60]!r}, not the name of an index file beside "
                        f"{paths['npy'].name}; re-run barlowtwins embed")
    features = _read_array(paths["npy"])
    check_meta(meta, features, paths["meta"])
    index = paths["npy"].parent / name
    if not index.is_file():
        raise DataError(f"index file {index} is missing; re-run barlowtwins embed")
    entries = _read_index(index)
    if len(entries) != len(features):
        raise DataError(f"{paths['npy']} has {features.shape[0]} rows but its index {index.name} has {len(entries)}; "
                        "re-run barlowtwins embed")
    return Embeddings(features, entries, meta)


def feature_dim(arch: dict) -> int | None:
    """The width of the features the backbone ``arch`` describes, computed without allocating it (built on the
    ``meta`` device); None when it cannot be told that way (a model that refuses the meta device)."""
    try:
        with torch.device("meta"):
            net = create_backbone(arch.get("backbone") or "resnet50", stem=arch.get("stem") or "standard",
                                  width=arch.get("width"))
    except BarlowTwinsError:
        raise
    except Exception:  # noqa: BLE001 - the check is an extra; loading the weights still checks the shapes
        return None
    # torch types a module's undeclared attributes as Tensor | Module; create_backbone sets this int
    return int(net.num_features)  # type: ignore[arg-type]


def cosine_neighbors(queries: torch.Tensor, database: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(Q, D) x (N, D) -> (Q, k) cosine similarities and (Q, k) database rows, most similar first."""
    q = torch.nn.functional.normalize(queries.float(), dim=1)
    db = torch.nn.functional.normalize(database.float(), dim=1)
    sims = q @ db.T  # (Q, N)
    return torch.topk(sims, min(k, db.shape[0]), dim=1)


@torch.no_grad()
def embed_image_files(setup, files: list[str], batch_size: int = 64) -> torch.Tensor:
    """(Q, D) features of image files with the evaluation preprocessing of ``setup`` (an `EvalSetup`)."""
    tf = eval_transform(setup.image_size)
    setup.backbone.eval()
    out = []
    for i in range(0, len(files), batch_size):
        images = torch.stack([tf(read_image(f)) for f in files[i:i + batch_size]])  # uint8 (B, 3, S, S)
        x = prepare_batch(images, setup.image_size, setup.device, setup.mean, setup.std,
                          channels_last=is_channels_last(setup.backbone))
        with autocast(setup.device, setup.amp_dtype):
            out.append(setup.backbone(x).float().cpu())
    return torch.cat(out)


def _thumbnail(entry: str, meta: dict, size: int, datasets: dict):
    """A square RGB thumbnail of an index entry (a file, or an image of an in-memory data set); None for a file
    that cannot be read (skipped and counted, `barlowtwins.data.bad_files`)."""
    if os.path.isfile(entry):
        try:
            img = read_image(entry)
        except DataError as e:  # unreadable since it was embedded: skipped, its cell left grey
            note_unreadable(entry, short_reason(getattr(e, "reason", None) or str(e)))
            return None
    else:
        parts = entry.rsplit(":", 2)
        if len(parts) != 3 or not parts[2].isdigit():
            raise DataError(f"image {entry} of the embeddings index no longer exists (moved or deleted?); draw the "
                            "sheet after re-running barlowtwins embed, or leave out --sheet")
        name, split, i = parts[0], parts[1], int(parts[2])
        if (name, split) not in datasets:
            datasets[(name, split)] = build_dataset(name, meta.get("data_dir"), split)
        if i >= len(datasets[(name, split)]):
            raise DataError(f"index entry {entry} is beyond the {len(datasets[(name, split)])} images of {name} "
                            f"{split}; re-run barlowtwins embed")
        arr = datasets[(name, split)][i][0]  # uint8 (C, H, W)
        arr = arr.expand(3, -1, -1) if arr.shape[0] == 1 else arr
        img = Image.fromarray(arr.permute(1, 2, 0).numpy())
    return ImageOps.fit(img, (size, size), Image.Resampling.BICUBIC)


def contact_sheet(queries: list[str], neighbors: list[list[tuple[str, float]]], output: str | os.PathLike,
                  meta: dict | None = None, thumb: int = 128) -> Path:
    """A PNG grid: one row per query (the query, then its neighbours with their cosine similarity)."""
    pad, caption = 4, 14
    cols = 1 + max(len(n) for n in neighbors)
    sheet = Image.new("RGB", (cols * (thumb + pad) + pad, len(queries) * (thumb + caption + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    cache: dict = {}
    for r, (q, found) in enumerate(zip(queries, neighbors)):
        y = pad + r * (thumb + caption + pad)
        cells = [(q, "query")] + [(e, f"{s:.3f}") for e, s in found]
        for c, (entry, label) in enumerate(cells):
            x = pad + c * (thumb + pad)
            tile = _thumbnail(entry, meta or {}, thumb, cache)
            if tile is None:
                tile, label = Image.new("RGB", (thumb, thumb), (160, 160, 160)), "unreadable"
            sheet.paste(tile, (x, y))
            draw.text((x + 2, y + thumb + 1), label, fill=(200, 0, 0) if c == 0 else (0, 0, 0))
    out = Path(output)
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out
