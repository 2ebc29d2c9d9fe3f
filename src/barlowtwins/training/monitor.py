"""What a pretraining run records for `barlowtwins report` beyond the loss: the share of time spent waiting for
data, snapshots of the cross-correlation matrix C, and (optionally) TensorBoard.

:class:`RunMonitor` stands in for the metrics log (same ``write(record)``), so the trainer's records pass
through it:

* **data wait**: ``batches(iterator)`` wraps the batch iterator and times every ``next()``: the host time spent
  waiting for the next batch after a step was issued. Each step record gains ``data_wait_sec`` (summed over the
  log window) and ``data_wait_share`` (that sum over the window's wall time). This is host-side time. On CUDA a
  step is queued asynchronously, so the host may already wait for data while the GPU still computes: a high
  share means the loader cannot keep up with the host's step submission, and the GPU starves only once its
  queue of submitted work drains; a share near 0 means data was always ready.
* **C snapshots**: the loss returns C[:k, :k] (``BarlowTwins.c_block``, a slice of the matrix it builds
  anyway, global under DDP). The monitor keeps a reference to it on the device each step (no host sync) and
  writes it to ``<out>/correlation.jsonl`` at the first step, at log steps spaced geometrically (x1.5), and at the
  last step: about 25 snapshots for a 1000-epoch ImageNet run, 64 x 64 numbers each. Rank 0 writes.
* **TensorBoard** (``--tensorboard``, the ``tensorboard`` extra): the scalars of every record and C as a heat
  map image, in ``<out>/tensorboard``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch

from barlowtwins.errors import field_error
from barlowtwins.runtime.files import append_line, as_write_error

CORRELATION_FILE = "correlation.jsonl"
TENSORBOARD_DIR = "tensorboard"
SNAPSHOT_RATIO = 1.5


def heatmap_rgb(c: np.ndarray, scale: int = 4) -> np.ndarray:
    """(k, k) values in [-1, 1] -> (k*scale, k*scale, 3) uint8: blue (-1), white (0), red (+1), nearest upscale.

    A fixed diverging map without matplotlib, so the trainer's TensorBoard images need no plotting library."""
    v = np.clip(np.nan_to_num(np.asarray(c, dtype=np.float64)), -1.0, 1.0)
    pos, neg = np.clip(v, 0, 1), np.clip(-v, 0, 1)
    r = 1.0 - neg
    g = 1.0 - np.maximum(pos, neg)
    b = 1.0 - pos
    img = (np.stack([r, g, b], axis=-1) * 255).round().astype(np.uint8)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


class RunMonitor:
    """The metrics log plus data-wait timing, C snapshots and TensorBoard.

    Args:
        log: the JSON-lines log (anything with ``write(record)``).
        model: the un-wrapped ``BarlowTwins`` model; its loss is asked for C[:dims, :dims].
        out: the run folder on the main process, None on the others (they time and compute but never write).
        dims: side of the C block (0: no snapshots).
        log_every: the trainer's log interval (snapshots are taken at log steps, where the host syncs anyway).
        tensorboard: also write TensorBoard events.
    """

    def __init__(self, log, model: torch.nn.Module | None, out: Path | None, *, dims: int = 64, log_every: int = 20,
                 tensorboard: bool = False):
        self.log = log
        self.out = Path(out) if out is not None else None
        self.dims = max(0, int(dims))
        self.log_every = max(1, int(log_every))
        if model is not None and self.dims and hasattr(model, "c_block"):
            # before the first forward (a compiled model sees it at tracing); the ignore: torch annotates
            # nn.Module.__setattr__'s value as Tensor | Module, though it sets any value
            model.c_block = self.dims  # type: ignore[assignment]
        self.writer = None
        if tensorboard and self.out is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise field_error(lambda n: f"{n('tensorboard')} needs the tensorboard package: pip install "
                                            "'barlowtwins[tensorboard]'") from None
            self.writer = SummaryWriter(str(self.out / TENSORBOARD_DIR))
        self.wait = 0.0
        self.window_start: float | None = None
        self.block: torch.Tensor | None = None  # the latest step's C block, on the device
        self.block_step: int | None = None
        self.next_snapshot: int | None = None
        self.saved_step: int | None = None
        self.error: OSError | None = None  # a failed append to correlation.jsonl

    @property
    def write_error(self) -> OSError | None:
        """The first failed append to the run's logs (metrics or correlation), for the trainer to stop on."""
        return getattr(self.log, "error", None) or self.error

    @classmethod
    def for_run(cls, cfg, log, model, out: Path | None) -> "RunMonitor":
        """The monitor of a ``PretrainConfig`` run (its fields' ranges are checked by the config itself)."""
        return cls(log, model, out, dims=cfg.correlation_dims, log_every=cfg.log_every, tensorboard=cfg.tensorboard)

    # ---- data wait ----------------------------------------------------------------------------------------
    def batches(self, iterable: Iterable) -> Iterator:
        """Yield from ``iterable``, adding the time each ``next()`` takes to the current window's data wait."""
        it = iter(iterable)
        while True:
            t0 = time.perf_counter()
            if self.window_start is None:
                self.window_start = t0
            try:
                item = next(it)
            except StopIteration:
                return
            self.wait += time.perf_counter() - t0
            yield item

    # ---- the metrics log ----------------------------------------------------------------------------------
    def write(self, record: dict) -> None:
        if "loss" in record and "event" not in record:  # a step record closes a log window
            now = time.perf_counter()
            span = now - self.window_start if self.window_start is not None else 0.0
            record["data_wait_sec"] = self.wait
            record["data_wait_share"] = min(1.0, self.wait / span) if span > 0 else 0.0
            self.wait, self.window_start = 0.0, now
        self.log.write(record)
        if self.writer is not None:
            self._scalars(record)

    def rewind(self, step: int) -> int:
        """Drop the log's records after ``step`` (a resumed run writes them again; snapshots of a step are read
        last-wins by `read_snapshots`, so correlation.jsonl needs no rewind)."""
        return self.log.rewind(step)

    def _scalars(self, record: dict) -> None:
        assert self.writer is not None  # called only with a writer (by write)
        step = record.get("step")
        if step is None:
            return
        event = record.get("event")
        prefix = "train" if event is None else event
        if event not in (None, "knn", "budget"):
            return
        for k, v in record.items():
            if k not in ("step", "event", "time") and isinstance(v, (int, float)) and not isinstance(v, bool) \
                    and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        self.writer.flush()

    # ---- C snapshots --------------------------------------------------------------------------------------
    def after_step(self, step: int, result) -> None:
        """Called after every step with the step's loss output; writes a snapshot when one is due."""
        block = getattr(result, "c_block", None)
        if block is None or self.out is None:
            return
        self.block, self.block_step = block, step
        # next_snapshot None: the first step of this process (also after a resume)
        if self.next_snapshot is None or (step % self.log_every == 0 and step >= self.next_snapshot):
            self._save()
            self.next_snapshot = max(step + 1, math.ceil(step * SNAPSHOT_RATIO))

    def close(self, step: int | None = None) -> None:
        """The last step's snapshot (when not written yet), and TensorBoard's files."""
        if self.block is not None and self.saved_step != self.block_step:
            self._save()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _save(self) -> None:
        # called once after_step kept a block, which it does only with an out folder
        assert self.block is not None and self.out is not None
        c = self.block.detach().float().cpu().numpy()  # (k, k): the only copy to the host
        self.saved_step = self.block_step
        if not np.isfinite(c).all():
            return  # nothing non-finite is recorded; the loss check reports the failure
        rec = {"step": self.block_step, "time": time.time(), "dims": int(c.shape[0]),
               "c": np.round(c.astype(np.float64), 4).tolist()}
        if self.error is not None:
            return
        try:
            append_line(self.out / CORRELATION_FILE, json.dumps(rec))
        except OSError as e:
            self.error = as_write_error(e, self.out / CORRELATION_FILE)
            return
        if self.writer is not None:
            self.writer.add_image("correlation/C_block", heatmap_rgb(c), self.block_step, dataformats="HWC")
            self.writer.flush()


def read_snapshots(run_dir: str | Path) -> list[dict]:
    """The C snapshots of a run folder, in step order: [{"step", "dims", "c": (k, k) ndarray}, ...]."""
    path = Path(run_dir) / CORRELATION_FILE
    if not path.exists():
        return []
    snaps = {}
    with open(path, "rb") as f:  # line by line, as bytes: a torn or binary tail is skipped, never decoded whole
        lines = list(f)
    for line in lines:
        try:
            rec = json.loads(line)
            snaps[int(rec["step"])] = {"step": int(rec["step"]), "dims": rec["dims"], "c": np.asarray(rec["c"])}
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            continue  # a line cut short by a crash
    return [snaps[s] for s in sorted(snaps)]
