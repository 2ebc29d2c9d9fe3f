"""Result files: one JSON per evaluation, and a Markdown table of all that a set of folders holds.

Every evaluation command writes a record with the data set, split, protocol, hyperparameters, metrics,
the checkpoint (origin and SHA-256) and timing. When the checkpoint is a run folder the file goes to
``<run>/eval/<protocol>-<dataset>[-<tag>].json``; ``--output`` chooses another place.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

from .. import __version__

RESULTS_DIRNAME = "eval"


def result_path(protocol: str, dataset: str, checkpoint: str | None, output: str | None, tag: str = "") -> Path:
    name = f"{protocol}-{dataset}{('-' + tag) if tag else ''}.json"
    if output:
        out = Path(output)
        return out / name if out.is_dir() or output.endswith(os.sep) else out
    if checkpoint and Path(checkpoint).is_dir():
        return Path(checkpoint) / RESULTS_DIRNAME / name
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("results") / f"{protocol}-{dataset}{('-' + tag) if tag else ''}-{stamp}.json"


def write_result(record: dict, path: Path) -> Path:
    record = {"barlowtwins_version": __version__,
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **record}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def find_results(paths: list[str]) -> list[tuple[Path, dict]]:
    found = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("*.json"))
        for f in files:
            try:
                rec = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(rec, dict) and "protocol" in rec and "metrics" in rec:
                found.append((f, rec))
    return found


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else ("" if v is None else str(v))


def markdown_table(results: list[tuple[Path, dict]]) -> str:
    """One row per (result file, metric group): checkpoint, protocol, data set, split, top-1, top-5/mAP."""
    head = "| checkpoint | protocol | dataset | split | setting | top-1 | top-5 | mAP | file |"
    rows = [head, "|" + "---|" * 9]
    for path, rec in results:
        metrics = rec["metrics"]
        groups = {k: v for k, v in metrics.items() if isinstance(v, dict)} or {"": metrics}
        for setting, m in groups.items():
            m = {"mAP": m.get("AP"), **m} if "AP" in m else m  # detection: its box AP in the mAP column
            rows.append("| " + " | ".join([
                str(rec.get("checkpoint", "")), rec.get("protocol", ""), rec.get("dataset", ""),
                rec.get("split", ""), setting, _fmt(m.get("top1")), _fmt(m.get("top5")), _fmt(m.get("mAP")),
                str(path)]) + " |")
    return "\n".join(rows)
