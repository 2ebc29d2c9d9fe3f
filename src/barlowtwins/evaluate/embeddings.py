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

from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.images import read_image
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.features import eval_transform, prepare_batch
from barlowtwins.runtime.files import atomic_write, write_text_atomic
from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.runtime.hardware import autocast

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
    """An embeddings file read back: (N, D) float32 features, the N index entries, and the metadata."""

    features: np.ndarray
    entries: list[str]
    meta: dict


def read_embeddings(path: str | os.PathLike) -> Embeddings:
    """Read ``emb.npy`` and its index and metadata (one-line errors when a part is missing or inconsistent)."""
    paths = sidecar_paths(path)
    if not paths["npy"].is_file():
        raise DataError(f"embeddings file {paths['npy']} does not exist; write it with barlowtwins embed")
    if not paths["meta"].is_file():
        raise DataError(f"{paths['meta']} is missing; it is written by barlowtwins embed next to {paths['npy'].name}")
    meta = json.loads(paths["meta"].read_text())
    features = np.load(paths["npy"], allow_pickle=False)
    index = paths["npy"].parent / meta.get("index", paths["csv"].name)
    if not index.is_file():
        raise DataError(f"index file {index} is missing; re-run barlowtwins embed")
    if index.suffix == ".parquet":
        import pyarrow.parquet as pq

        entries = [str(p) for p in pq.read_table(index, columns=["path"]).column("path").to_pylist()]
    else:
        with open(index, newline="") as f:
            entries = [row["path"] for row in csv.DictReader(f)]
    if features.ndim != 2 or len(entries) != len(features):
        raise DataError(f"{paths['npy']} has {features.shape} rows but its index {index.name} has {len(entries)}; "
                        "re-run barlowtwins embed")
    return Embeddings(features.astype(np.float32, copy=False), entries, meta)


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
        x = prepare_batch(images, setup.image_size, setup.device, setup.mean, setup.std)
        with autocast(setup.device, setup.amp_dtype):
            out.append(setup.backbone(x).float().cpu())
    return torch.cat(out)


def _thumbnail(entry: str, meta: dict, size: int, datasets: dict):
    """A square RGB thumbnail of an index entry (a file, or an image of an in-memory data set)."""
    if os.path.isfile(entry):
        img = read_image(entry)
    else:
        name, split, i = entry.rsplit(":", 2)
        if (name, split) not in datasets:
            datasets[(name, split)] = build_dataset(name, meta.get("data_dir"), split)
        arr = datasets[(name, split)][int(i)][0]  # uint8 (C, H, W)
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
            sheet.paste(_thumbnail(entry, meta or {}, thumb, cache), (x, y))
            draw.text((x + 2, y + thumb + 1), label, fill=(200, 0, 0) if c == 0 else (0, 0, 0))
    out = Path(output)
    atomic_write(out, lambda tmp: sheet.save(tmp, format="PNG"))
    return out
