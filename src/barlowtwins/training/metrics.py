"""The run's metrics: JSON lines in ``<out>/metrics.jsonl`` and the on-device window of loss terms between two
log lines (one host sync per log line, none per step)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from barlowtwins.runtime.files import write_text_atomic


class MetricsLog:
    """JSON lines in ``<out>/metrics.jsonl`` (``path=None``: write nothing, as on ranks other than 0)."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def records(self) -> list[dict]:
        """Every record written so far (a torn last line, from a kill mid-write, is skipped)."""
        if self.path is None or not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                out.append(record)
        return out

    def rewind(self, step: int) -> int:
        """Drop the records of steps after ``step`` (written after the checkpoint a run resumes from, and about to
        be written again); the file is replaced atomically. Returns how many records were dropped."""
        if self.path is None or not self.path.is_file():
            return 0
        records = self.records()
        keep = [r for r in records if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
        dropped = len(records) - len(keep)
        if dropped or len(keep) != len(self.path.read_text(errors="replace").splitlines()):
            write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in keep))
        return dropped


class LossWindow:
    """Loss terms summed on the device between two log lines: (loss, on-diagonal, off-diagonal)."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, device=device)
        self.steps = 0
        self.start = time.time()
        self.last: dict | None = None  # the last flushed means

    def add(self, result) -> None:
        self.sums += torch.stack([result.loss.detach(), result.on_diag.detach(), result.off_diag.detach()]).float()
        self.steps += 1

    def means(self) -> dict:
        """The window's mean loss terms (a host sync)."""
        loss, on_diag, off_diag = (self.sums / max(self.steps, 1)).tolist()
        return {"loss": loss, "on_diag": on_diag, "off_diag": off_diag}

    def flush(self) -> dict:
        """The window's means, its step count and throughput time; then start a new window."""
        now = time.time()
        record = {**self.means(), "steps": self.steps, "seconds": max(now - self.start, 1e-9)}
        self.sums.zero_()
        self.steps, self.start = 0, now
        self.last = record
        return record
