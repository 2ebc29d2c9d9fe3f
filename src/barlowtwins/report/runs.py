"""A run folder as data: its config, metrics records, C snapshots and evaluation results."""

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


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(rec, dict):
                records.append(rec)
    return records


def load_run(path: str | Path) -> RunData:
    """Read a pretraining run folder; a one-line DataError when it is not one."""
    p = Path(path)
    if not p.is_dir():
        raise DataError(f"run folder {p} does not exist; give the --out folder of a pretraining run")
    metrics = p / "metrics.jsonl"
    if not metrics.exists():
        raise DataError(f"{p} has no metrics.jsonl; give the --out folder of a pretraining run")
    records = _read_jsonl(metrics)
    # A resumed run may log a step twice (after the last checkpoint, before the interruption): keep the last.
    by_step = {}
    for r in records:
        if "event" not in r and "step" in r:
            by_step[r["step"]] = r
    config = {}
    if (p / "config.yaml").exists():
        try:
            config = yaml.safe_load((p / "config.yaml").read_text()) or {}
        except yaml.YAMLError:
            config = {}
    results = [(f, rec) for f, rec in find_results([str(p)])]
    return RunData(path=p, name=p.resolve().name, config=config, steps=[by_step[s] for s in sorted(by_step)],
                   events=[r for r in records if "event" in r], snapshots=read_snapshots(p), results=results)
