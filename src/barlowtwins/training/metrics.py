"""The run's metrics: JSON lines in ``<out>/metrics.jsonl`` and the on-device window of loss terms between two
log lines (one host sync per log line, none per step)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from barlowtwins.runtime.files import append_line, as_write_error, atomic_write


class MetricsLog:
    """JSON lines in ``<out>/metrics.jsonl`` (``path=None``: write nothing, as on ranks other than 0).

    A record is appended whole or not at all. A failed append (disk full, read-only file system) does not raise:
    it is kept in ``error`` and later records are dropped, so the trainer can stop at its next check with a
    checkpoint instead of losing the steps since the last one."""

    def __init__(self, path: Path | None):
        self.path = Path(path) if path is not None else None
        self.error: OSError | None = None

    def write(self, record: dict) -> None:
        if self.path is None or self.error is not None:
            return
        try:
            append_line(self.path, json.dumps(record))
        except OSError as e:
            self.error = as_write_error(e, self.path)

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

    @staticmethod
    def _kept(line: bytes, step: int) -> bool | None:
        """True to keep a line, False for a record of a later step, None for a line that is not a record."""
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(record, dict):
            return None
        s = record.get("step")
        return not isinstance(s, (int, float)) or isinstance(s, bool) or s <= step

    def rewind(self, step: int) -> int:
        """Drop the records of steps after ``step`` (written after the checkpoint a run resumes from, and about to
        be written again) and any torn or unreadable line; the file is replaced atomically, streamed line by line
        (memory stays flat whatever its size). Returns how many records were dropped."""
        path = self.path
        if path is None or not path.is_file():
            return 0
        dropped = torn = 0
        with open(path, "rb") as f:
            for line in f:
                kept = self._kept(line, step)
                dropped += kept is False
                torn += kept is None
        if dropped or torn:
            def write(tmp: Path) -> None:
                with open(path, "rb") as src, open(tmp, "wb") as dst:
                    for line in src:
                        if self._kept(line, step):
                            dst.write(line if line.endswith(b"\n") else line + b"\n")

            atomic_write(path, write)
        return dropped


class LossWindow:
    """Loss terms summed on the device between two log lines: (loss, on-diagonal, off-diagonal, the Mixed
    Barlow Twins regulariser when the run mixes, and multi-crop's small-crop term when the run has small crops)."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(5, device=device)
        self.mixed = False
        self.cropped = False
        self.steps = 0
        self.start = time.time()
        self.last: dict | None = None  # the last flushed means

    def add(self, result) -> None:
        mix, crops = getattr(result, "mix", None), getattr(result, "crops", None)
        self.mixed |= mix is not None
        self.cropped |= crops is not None
        zero = result.loss.new_zeros(())
        self.sums += torch.stack([result.loss.detach(), result.on_diag.detach(), result.off_diag.detach(),
                                  zero if mix is None else mix.detach(),
                                  zero if crops is None else crops.detach()]).float()
        self.steps += 1

    def means(self) -> dict:
        """The window's mean loss terms (a host sync)."""
        loss, on_diag, off_diag, mix, crops = (self.sums / max(self.steps, 1)).tolist()
        out = {"loss": loss, "on_diag": on_diag, "off_diag": off_diag}
        if self.mixed:
            out["mix"] = mix
        if self.cropped:
            out["crops"] = crops
        return out

    def flush(self) -> dict:
        """The window's means, its step count and throughput time; then start a new window."""
        now = time.time()
        record = {**self.means(), "steps": self.steps, "seconds": max(now - self.start, 1e-9)}
        self.sums.zero_()
        self.steps, self.start = 0, now
        self.last = record
        return record
