"""A run folder as data: its config, metrics records, C snapshots and evaluation results.

A damaged file never stops the report: unreadable lines of ``metrics.jsonl`` (cut short by a crash, or bytes
that are not text) are skipped and counted (``skipped_lines``), and a config, snapshot file or result file that
cannot be read is left out with a note (``notes``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from barlowtwins.errors import DataError
from barlowtwins.evaluate.results import find_results
from barlowtwins.training.monitor import read_snapshots


@dataclass
class RunData:
    path: Path
    name: str
    config: dict  # config.yaml as saved (empty when missing)
    steps: list[dict]  # step records of metrics.jsonl (loss, on_diag, off_diag, lr_weights, images_per_sec, ...)
    events: list[dict]  # event records (start, resume, budget, knn, checkpoint, done)
    snapshots: list[dict]  # C blocks: {"step", "dims", "c": (k, k) ndarray}
    results: list[tuple[Path, dict]] = field(default_factory=list)  # evaluation result files
    skipped_lines: int = 0  # lines of metrics.jsonl that were not a JSON record (torn, binary)
    notes: list[str] = field(default_factory=list)  # what could not be read, one line each

    @property
    def steps_per_epoch(self) -> int | None:
        for e in self.events:
            if e.get("event") in ("start", "resume") and e.get("steps_per_epoch"):
                return int(e["steps_per_epoch"])
        return None

    def epoch_of(self, step: int) -> float | None:
        spe = self.steps_per_epoch
        return step / spe if spe else None

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(epochs, values) of a step-record field, skipping records without it."""
        xs, ys = [], []
        for r in self.steps:
            if isinstance(r.get(key), (int, float)):
                xs.append(r.get("epoch", r["step"]))
                ys.append(float(r[key]))
        return xs, ys

    @property
    def knn(self) -> list[dict]:
        return [e for e in self.events if e.get("event") == "knn"]


def _read_jsonl(path: Path) -> tuple[list[dict], int]:
    """The JSON object lines of ``path`` and how many other non-blank lines were skipped (a line cut short by a
    crash, bytes that are not UTF-8 text, anything but an object)."""
    records, skipped = [], 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                rec = None
            if isinstance(rec, dict):
                records.append(rec)
            else:
                skipped += 1
    return records, skipped


def _read_config(path: Path, notes: list[str]) -> dict:
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        notes.append(f"{path.name} could not be read ({type(e).__name__}); its settings are left out")
        return {}
    if not isinstance(config, dict):
        notes.append(f"{path.name} is not a mapping of settings; its settings are left out")
        return {}
    return config


def load_run(path: str | Path) -> RunData:
    """Read a pretraining run folder; a one-line DataError when it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"run folder {p} does not exist; give the --out folder of a pretraining run")
    metrics = p / "metrics.jsonl"
    if not metrics.exists():
        raise DataError(f"{p} has no metrics.jsonl; give the --out folder of a pretraining run")
    try:
        records, skipped = _read_jsonl(metrics)
    except OSError as e:
        raise DataError(f"cannot read {metrics} ({e.strerror or e}); check its permissions") from None
    notes = []
    if skipped:
        notes.append(f"{skipped} unreadable line(s) of metrics.jsonl skipped (cut short, or not text)")
    # A resumed run may log a step twice (after the last checkpoint, before the interruption): keep the last.
    by_step = {}
    for r in records:
        if "event" not in r and isinstance(r.get("step"), (int, float)) and not isinstance(r.get("step"), bool):
            by_step[r["step"]] = r
    config = _read_config(p / "config.yaml", notes)
    try:
        snapshots = read_snapshots(p)
    except (OSError, ValueError) as e:  # ValueError: bytes that are not text
        notes.append(f"correlation.jsonl could not be read ({type(e).__name__}); the C snapshots are left out")
        snapshots = []
    skipped_results: list[tuple[Path, str]] = []
    results = find_results([str(p)], skipped=skipped_results)
    notes += [f"result file {f} skipped: {why}" for f, why in skipped_results]
    return RunData(path=p, name=p.resolve().name, config=config, steps=[by_step[s] for s in sorted(by_step)],
                   events=[r for r in records if "event" in r], snapshots=snapshots, results=results,
                   skipped_lines=skipped, notes=notes)
