"""One reader of class labels for every data set that stores them as values: table columns and shard members.

    >>> labels, classes, named = read_labels([0, 1, None, 1], where="data/train.parquet column 'label'")
    >>> labels, classes, named                      # ([0, 1, -1, 1], ['0', '1'], False)
    >>> read_labels(["dog", "cat", "dog"], where="...")   # ([1, 0, 1], ['cat', 'dog'], True)

A label is an integer class index (``0 <= k < MAX_CLASSES``; ``-1`` or a missing value: unlabelled) or a class
name (a string; the names present, sorted, become the classes and the labels their indices). Integers written
as text (a shard's ``.cls`` member holds ``b"3"``) are integers. Anything else is refused in one line naming
where it came from: a fractional or float value (a regression target, or labels that went through a float
column), booleans, a mix of names and numbers, an index beyond `MAX_CLASSES` (which would otherwise make a list
of that many class names). So pretraining, kNN, the linear protocol and embedding read the same labels or stop
with the same line.

``named`` says whether the classes have real names (from the values or from ``names``, the class names a table's
``ClassLabel`` feature or a shard manifest records) or are made-up numbers ``'0'``, ``'1'`` ... (see
`barlowtwins.data.datasets.align_classes`, which then matches another split's classes by index).
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable, Sequence
from typing import cast

from barlowtwins.errors import DataError

MAX_CLASSES = 1_000_000  # more classes than any classification data set has; a bigger index is a broken label
_INT_TEXT = re.compile(r"[+-]?\d+")


def _as_label(value) -> int | str | None:
    """One raw value as an int (class index), a str (class name) or None (unlabelled); ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="strict")
    if isinstance(value, str):
        text = value.strip()
        if _INT_TEXT.fullmatch(text):
            return int(text)
        if not text:
            return None
        return text
    if isinstance(value, bool):
        raise ValueError(f"the boolean {value}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        # typeshed's numbers.Real has no __int__ (its __trunc__ returns an Integral-like), though int() takes any Real
        whole = int(value)  # type: ignore[call-overload]
        raise ValueError(f"the number {value} (not an integer class index)" if value != whole else
                         f"the float {value} (class indices are integers: store them as integers)")
    raise ValueError(f"a {type(value).__name__}")


def read_labels(values: Iterable, where: str, names: Sequence[str] | None = None) -> tuple[list[int], list[str], bool]:
    """``(labels, classes, named)`` of raw label values (see the module docstring); one `DataError` for a value
    that is not a label, naming ``where`` (e.g. "the table data/x.parquet, column 'label'") and the first one."""
    raw: list[int | str | None] = []
    for i, value in enumerate(values):
        try:
            raw.append(_as_label(value))
        except (ValueError, UnicodeDecodeError) as e:
            what = "bytes that are not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
            raise DataError(f"{where}: label {i} is {what}; labels are class indices (integers 0 to "
                            f"{MAX_CLASSES - 1}, -1 for none) or class names (text)") from None
    kinds = {type(v) for v in raw if v is not None}
    if kinds == {int, str}:
        first = next(v for v in raw if isinstance(v, str))
        raise DataError(f"{where}: the labels mix class names (such as '{first[:40]}') and class indices; use one "
                        "kind for every sample")
    if str in kinds:
        found = sorted({v for v in raw if isinstance(v, str)})
        classes = list(found)
        if names:  # names recorded with the data: their order numbers the classes
            unknown = [c for c in found if c not in set(names)]
            if unknown:
                raise DataError(f"{where}: label '{unknown[0][:40]}' is not one of the {len(names)} recorded class "
                                "names; fix the label or the recorded names")
            classes = [str(n) for n in names]
        index = {c: k for k, c in enumerate(classes)}
        texts = cast("list[str | None]", raw)  # names only: a mix with indices was refused above
        return [-1 if v is None else index[v] for v in texts], classes, True
    ints = [-1 if v is None else v for v in cast("list[int | None]", raw)]  # no names (str not in kinds)
    bad = next((v for v in ints if v < -1 or v >= MAX_CLASSES), None)
    if bad is not None:
        raise DataError(f"{where}: label {bad} is not a class index (0 to {MAX_CLASSES - 1}, -1 for none); fix the "
                        "labels")
    top = max(ints, default=-1)
    if names:
        if top >= len(names):
            raise DataError(f"{where}: label {top} but only {len(names)} class names are recorded; the labels and "
                            "the class names do not match")
        return ints, [str(n) for n in names], True
    return ints, ([str(k) for k in range(top + 1)] if top >= 0 else []), False


__all__ = ["MAX_CLASSES", "read_labels"]
