"""Hugging Face data sets and Parquet tables with an image column, read with random access.

    >>> ds = table_dataset("data/beans")                 # a folder written by datasets' save_to_disk
    >>> ds = table_dataset("data/beans", split="test")   # a DatasetDict's split, or <dir>/<split>/*.parquet
    >>> ds = table_dataset("data/train.parquet", image_column="img", label_column="labels")
    >>> ds.files[3]                                      # 'data/train.parquet:row3': read like a file

Both forms are Arrow tables: a ``save_to_disk`` folder holds Arrow stream files listed in its ``state.json``
(a ``DatasetDict`` one folder per split, named in ``dataset_dict.json``), a Parquet data set ``.parquet`` files
(``<dir>/<split>/*.parquet``, ``<dir>/<split>-*.parquet`` as on the Hub, or every ``*.parquet`` of the folder).
They are read with pyarrow (the ``hf`` extra), so the ``datasets`` package itself is not needed at run time.
The image column holds the encoded file (``datasets``' ``Image`` feature: a struct of ``bytes`` and ``path``, or
plain binary); the label column class indices (``ClassLabel``, whose names become the class names) or class
names, read by `barlowtwins.data.labels.read_labels` (floats and out-of-range indices are refused in one line). Without
``image_column`` the column of the ``Image`` feature, or else the first binary or image-struct column, is used;
without ``label_column`` the ``ClassLabel`` column, or else one named ``label``, ``labels`` or ``cls`` (none:
unlabelled, -1).

Every row becomes a `TableRow`: a name that reads its image bytes from the table, which each process opens once
(memory-mapped for Arrow files), so the rows go through the samplers, data paths and bad-file policy of a
folder's files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from barlowtwins.data.image_files import ImageFiles
from barlowtwins.data.images import SampleRef
from barlowtwins.data.labels import read_labels
from barlowtwins.errors import DataError, field_error

LABEL_NAMES = ("label", "labels", "cls")


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.ipc  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise field_error(lambda n: f"{n('dataset')} hf needs pyarrow: pip install 'barlowtwins[hf]'",
                          DataError) from None
    return pyarrow


_TABLES: dict[tuple[int, str], object] = {}  # (process id, file) -> its table: forked workers open their own


def _read_table(path: str):
    pa = _pyarrow()
    if path.endswith(".parquet"):
        return pa.parquet.read_table(path, memory_map=True)
    with pa.memory_map(path) as source:  # an Arrow stream file, as save_to_disk writes them
        try:
            return pa.ipc.open_stream(source).read_all()
        except pa.ArrowInvalid:
            return pa.ipc.open_file(source).read_all()


def table(path: str):
    key = (os.getpid(), path)
    t = _TABLES.get(key)
    if t is None:
        try:
            t = _TABLES[key] = _read_table(path)
        except (OSError, ValueError, _pyarrow().ArrowException) as e:  # missing, truncated, not Arrow/Parquet
            raise DataError(f"cannot read the table {path} ({type(e).__name__}: {str(e)[:150]}); check the "
                            "file") from None
    return t


class TableRow(SampleRef):
    """Row ``row`` of a table file's image column: the string ``<file>:row<row>``."""

    path: str
    row: int
    column: str

    def __new__(cls, path: str, row: int, column: str):
        obj = super().__new__(cls, f"{path}:row{row}")
        obj.path, obj.row, obj.column = path, int(row), column
        return obj

    def __reduce__(self):
        return TableRow, (self.path, self.row, self.column)

    def read_bytes(self) -> bytes:
        value = table(self.path).column(self.column)[self.row].as_py()
        if isinstance(value, dict):
            data = value.get("bytes")
            if data is None and value.get("path"):  # an Image feature that points at a file instead
                with open(value["path"], "rb") as f:
                    return f.read()
            value = data
        if not isinstance(value, (bytes, bytearray)) or not value:
            err = DataError(f"corrupt or unreadable image {self} (no image bytes in column '{self.column}'); "
                            "fix the row or the --image-column")
            err.reason = "no image bytes"
            raise err
        return bytes(value)


def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path} ({type(e).__name__}: {str(e)[:120]}); re-save the data set") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is not the JSON object a saved data set holds; re-save the data set")
    return value


def table_files(root: str, split: str | None) -> tuple[list[str], dict]:
    """The table files of ``root`` for ``split`` and the features its ``dataset_info.json`` declares ({})."""
    path = Path(root).expanduser()
    if path.is_file():
        return [str(path)], {}
    if not path.is_dir():
        raise field_error(lambda n: f"data folder {path} does not exist; check {n('data_dir')}", DataError)
    if (path / "dataset_dict.json").is_file():  # a DatasetDict: one save_to_disk folder per split
        splits = _json(path / "dataset_dict.json").get("splits", [])
        if split is None or split not in splits:
            raise DataError(f"{path} has splits {', '.join(splits)}, not '{split}'; choose one with the split flag")
        path = path / split
    if (path / "state.json").is_file():
        state = _json(path / "state.json")
        files = [str(path / f["filename"]) for f in state.get("_data_files", []) if "filename" in f]
        info: dict = {}
        if (path / "dataset_info.json").is_file():
            info = _json(path / "dataset_info.json").get("features", {}) or {}
        return files, info
    for candidates in ((path / split).glob("*.parquet") if split and (path / split).is_dir() else [],
                       path.glob(f"{split}-*.parquet") if split else [],
                       path.glob(f"{split}.parquet") if split else [],
                       path.glob("*.parquet")):
        files = sorted(str(p) for p in candidates)
        if files:
            return files, {}
    raise field_error(lambda n: f"no data set in {path}: expected a folder written by save_to_disk (state.json) or "
                                f".parquet files; check {n('data_dir')}", DataError)


def _columns(schema, features: dict, image_column: str | None, label_column: str | None, where: str):
    pa = _pyarrow()
    names = list(schema.names)
    if image_column is None:
        tagged = [n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"]

        def looks_like_image(field):
            t = field.type
            return pa.types.is_binary(t) or pa.types.is_large_binary(t) or (
                pa.types.is_struct(t) and {"bytes", "path"} <= {t.field(i).name for i in range(t.num_fields)})

        image_column = next((n for n in tagged if n in names), None) or \
            next((f.name for f in schema if looks_like_image(f)), None)
        if image_column is None:
            raise field_error(lambda n: f"{where} has no image column (columns: {', '.join(names)}); name it with "
                                        f"{n('image_column')}", DataError)
    elif image_column not in names:
        raise field_error(lambda n: f"{where} has no column '{image_column}' (columns: {', '.join(names)}); check "
                                    f"{n('image_column')}", DataError)
    if label_column is None:
        tagged = [n for n, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"]
        label_column = next((n for n in tagged if n in names), None) or next((n for n in LABEL_NAMES if n in names),
                                                                            None)
    elif label_column not in names:
        raise field_error(lambda n: f"{where} has no column '{label_column}' (columns: {', '.join(names)}); check "
                                    f"{n('label_column')}", DataError)
    return image_column, label_column


class TableImages(ImageFiles):
    """Rows of Arrow/Parquet tables: an `ImageFiles` whose ``files`` are `TableRow` names."""

    named_classes: bool  # set by table_dataset; declared only (``getattr(ds, "named_classes", True)`` elsewhere)

    def subset(self, indices) -> "TableImages":
        idx = [int(i) for i in indices]
        out = TableImages([self.files[i] for i in idx], self.labels[idx].tolist(), self.classes, self.name,
                          self.transform)
        out.named_classes = getattr(self, "named_classes", True)
        return out


def table_dataset(root: str, split: str | None = None, image_column: str | None = None,
                  label_column: str | None = None, transform=None) -> TableImages:
    """The rows of the tables under ``root`` (see the module docstring) for ``split``."""
    paths, features = table_files(root, split)
    files: list[TableRow] = []
    raw: list[object] = []
    for path in paths:
        t = table(path)
        image, label = _columns(t.schema, features, image_column, label_column, path)
        image_column, label_column = image, label  # every file of a data set has the same columns
        files += [TableRow(path, r, image) for r in range(t.num_rows)]
        raw += t.column(label).to_pylist() if label is not None else [None] * t.num_rows
    if not files:
        raise DataError(f"the data set in {root} has no rows")
    names = None
    if label_column and isinstance(features.get(label_column), dict):
        names = list(features[label_column].get("names", [])) or None
    where = f"the data set {root}, column '{label_column}'"
    labels, classes, named = read_labels(raw, where, names)
    ds = TableImages(files, labels, classes, str(root), transform)
    ds.named_classes = named
    return ds


__all__ = ["TableImages", "TableRow", "table_dataset", "table_files"]
