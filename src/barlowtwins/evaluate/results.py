"""Result files: one JSON per evaluation, and a Markdown table of all that a set of folders holds.

Every evaluation command writes a record with the data set, split, protocol, hyperparameters, metrics,
the checkpoint (origin and SHA-256), timing and, for single-label data, the class-to-index map every split was
scored with (``classes``: the training split's) and what the splits did not share (``class_mismatch``). When the
checkpoint is a run folder the file goes to ``<run>/eval/<protocol>-<dataset>[-<tag>].json``; ``--output``
chooses another place (a ``.json`` file, or a folder: `result_path`), which `check_writable` checks before any
work. Metric values are written rounded to 4 decimals (float32 arithmetic leaves 34.00000035762787).
"""

from __future__ import annotations

import datetime
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from barlowtwins.errors import ConfigError
from barlowtwins.runtime.files import is_folder, write_text_atomic
from barlowtwins.version import __version__

RESULTS_DIRNAME = "eval"
def result_path(protocol: str, dataset: str, checkpoint: str | None, output: str | None, tag: str = "") -> Path:
    """Where a result goes. ``output`` (``--output``): a name ending in ``.json`` is the file; an existing folder, a
    name ending in a separator or a name without a suffix is a folder (made when the result is written) that gets
    ``<protocol>-<dataset>[-<tag>].json``; any other suffix is refused (`ConfigError`), so a result never lands in
    a file named without ``.json``. Without ``output``: ``<run>/eval/`` for a run folder, else ``results/`` with a
    time stamp."""
    name = f"{protocol}-{dataset}{('-' + tag) if tag else ''}.json"
    if output:
        out = Path(output)
        if is_folder(out) or output.endswith(os.sep) or (os.altsep and output.endswith(os.altsep)) or not out.suffix:
            return out / name
        if out.suffix.lower() != ".json":
            raise ConfigError(f"--output {output}: a result is a JSON file: name it {out.stem}.json, or give a "
                              "folder (a name without a suffix)")
        return out
    if checkpoint and Path(checkpoint).is_dir():
        return Path(checkpoint) / RESULTS_DIRNAME / name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{protocol}-{dataset}{('-' + tag) if tag else ''}-{stamp}.json"


METRIC_DECIMALS = 4  # metrics are written with this many decimals (percentages: 1e-4 points)


def rounded(value, decimals: int = METRIC_DECIMALS):
    """``value`` with every float rounded to ``decimals`` places (in mappings and lists too): a top-1 of
    34.00000035762787 (float32 noise) is written as 34.0. Integers, booleans and other values stay as they are."""
    if isinstance(value, float):
        return round(value, decimals) if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: rounded(v, decimals) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, decimals) for v in value]
    return value


def write_result(record: dict, path: Path) -> Path:
    """Write ``record`` as JSON (atomically), with the version and the time; its ``metrics`` rounded to
    `METRIC_DECIMALS` places (`rounded`: what is computed and printed is not changed)."""
    record = {"barlowtwins_version": __version__,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **record}
    if isinstance(record.get("metrics"), dict):
        record["metrics"] = rounded(record["metrics"])
    write_text_atomic(path, json.dumps(record, indent=2) + "\n")
    return path


def _read_result(f: Path) -> dict | None | str:
    """A result record, None for a JSON file that is not one, or why the file cannot be read (one line)."""
    try:
        rec = json.loads(f.read_bytes().decode("utf-8"))
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except UnicodeDecodeError:
        return "not UTF-8 text (damaged?); re-run the evaluation that wrote it"
    except json.JSONDecodeError as e:
        return f"not valid JSON ({e.msg} at line {e.lineno}; cut short?); re-run the evaluation that wrote it"
    except RecursionError:
        return "nested too deeply to be a result file"
    if not isinstance(rec, dict) or "protocol" not in rec:
        return None  # another JSON file (an embeddings' meta.json, a config)
    if not isinstance(rec.get("metrics"), dict):
        return "its 'metrics' is not a mapping of numbers; re-run the evaluation that wrote it"
    return rec


def find_results(paths: list[str], skipped: list[tuple[Path, str]] | None = None) -> list[tuple[Path, dict]]:
    """Every result file (a JSON record with ``protocol`` and ``metrics``) at or under ``paths``.

    Other JSON files are passed over; a ``.json`` file that cannot be read as JSON (cut short, damaged) or a
    record with malformed metrics is left out and, when ``skipped`` is given, appended to it as ``(path, why)``.
    """
    found = []
    for path in paths:
        p = Path(path)
        files = [p] if p.is_file() else sorted(p.rglob("*.json"))
        for f in files:
            rec = _read_result(f)
            if isinstance(rec, dict):
                found.append((f, rec))
            elif isinstance(rec, str) and skipped is not None:
                skipped.append((f, rec))
    return found


# The usual metrics first, in this order; any other a protocol reports follows in order of appearance.
METRIC_ORDER = ("top1", "top5", "mAP", "AP", "AP50", "AP75", "APs", "APm", "APl")


@dataclass
class EvalResult:
    """What every protocol function returns: its metrics and the other fields of the result record.

    ``metrics`` is flat (``{"top1": 71.2, "top5": 90.1}``, ``{"AP": 40.1, "AP50": 60.2, "AP75": 43.5}``) or one
    level of named groups (``{"k=20": {...}, "k=200": {...}}``, ``{"last": {...}, "best": {...}}``). The CLI only
    writes `to_record` and prints `summary`.
    """

    protocol: str
    dataset: str
    split: str
    metrics: dict
    hyperparameters: dict = field(default_factory=dict)
    train_split: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)  # counts (num_train, num_test) and the backbone's description
    skipped: list = field(default_factory=list)  # unreadable files left out: [{"file": ..., "reason": ...}]

    @property
    def skipped_files(self) -> int:
        return len(self.skipped)

    def to_record(self) -> dict:
        return {"protocol": self.protocol, "dataset": self.dataset, "split": self.split,
                "train_split": self.train_split, "hyperparameters": self.hyperparameters, "metrics": self.metrics,
                "seconds": self.seconds, **self.extra, "skipped_files": len(self.skipped),
                "skipped": list(self.skipped)}

    def groups(self) -> dict[str, dict[str, float]]:
        return metric_groups(self.metrics)

    def summary(self) -> str:
        """``top-1 71.20 top-5 90.10`` (or ``k=20: top-1 ... | k=200: ...``; ``AP 40.10 AP50 60.20 ...``)."""
        parts = []
        n_classes = len(self.extra.get("classes") or [])
        trivial_top5 = 0 < n_classes <= 5  # top-5 of 5 classes or fewer is 100 by construction: not shown
        for setting, m in self.groups().items():
            text = " ".join(f"{_label(k)} {_fmt(m[k])}" for k in _ordered(m) if not (trivial_top5 and k == "top5"))
            parts.append(f"{setting}: {text}" if setting else text)
        return " | ".join(parts)


def metric_groups(metrics: dict) -> dict[str, dict[str, float]]:
    """``{setting: {metric: number}}``: named groups of numbers, or ``{"": metrics}`` for a flat record."""
    groups = {k: v for k, v in metrics.items() if isinstance(v, dict)}
    if not groups:
        groups = {"": metrics}
    return {name: {k: v for k, v in g.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for name, g in groups.items()}


def _ordered(names) -> list[str]:
    names = list(dict.fromkeys(names))
    return [k for k in METRIC_ORDER if k in names] + [k for k in names if k not in METRIC_ORDER]


def _label(name: str) -> str:
    return {"top1": "top-1", "top5": "top-5"}.get(name, name)


def _fmt(v) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def markdown_table(results: list[tuple[Path, dict]]) -> str:
    """One row per (result file, metric group), one column per metric any of the results reports.

    The columns are not fixed: a detection result brings AP/AP50/AP75, a classification one top-1/top-5, an
    SVM one mAP; cells a protocol does not report stay empty.
    """
    rows_in = []
    for path, rec in results:
        for setting, m in metric_groups(rec.get("metrics") or {}).items():
            rows_in.append((path, rec, setting, m))
    columns = _ordered(k for _, _, _, m in rows_in for k in m)
    head = ["checkpoint", "protocol", "dataset", "split", "setting", *[_label(c) for c in columns], "file"]
    rows = ["| " + " | ".join(markdown_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    for path, rec, setting, m in rows_in:
        cells = [str(rec.get("checkpoint", "")), str(rec.get("protocol", "")), str(rec.get("dataset", "")),
                 str(rec.get("split", "")), setting, *[_fmt(m.get(c)) for c in columns], str(path)]
        rows.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    return "\n".join(rows)


def markdown_cell(text: str) -> str:
    """``text`` safe inside a Markdown table cell: ``|`` escaped, line breaks (and other control characters)
    as spaces, so a value can neither add a column nor end the row."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text.replace("|", "\\|")
