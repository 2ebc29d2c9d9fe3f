"""A wall-clock budget turned into a step count, kept across any number of resumes.

`TimeBudget` times a few steps (the very first ones, with their one-off start-up costs, are skipped), makes a
first estimate of how many steps fit, then corrects it at 10%, 25%, 50%, 75% and 90% of the run from the throughput seen
since the last estimate (early steps are often faster than steady state). Estimates happen at step counts
every rank agrees on, and rank 0's number is broadcast.

Its `state()` goes into every checkpoint: the time already spent, the chosen total and the corrections still
due. A resumed run restores it, so the schedule (and the learning rate) continues where it was instead of
starting a new budget. `warmup_steps` puts the warm-up inside the budget.
"""

from __future__ import annotations

import math
import time

from barlowtwins.errors import CheckpointError
from barlowtwins.runtime import distributed as D

# Under a budget the warm-up keeps its configured length but takes at most this share of the budgeted steps
# (a warm-up longer than the whole budget would leave the learning rate rising until the end).
MAX_WARMUP_SHARE = 0.2


def warmup_steps(configured: int, total_steps: int, budgeted: bool) -> int:
    """The warm-up length of a schedule of ``total_steps``: as configured, capped under a budget."""
    if not budgeted:
        return configured
    return min(configured, round(MAX_WARMUP_SHARE * total_steps))


def read_state(state: dict) -> tuple[int, int | None, list[float], float]:
    """(origin, total steps, pending corrections, seconds spent) of a checkpoint's budget record, each checked:
    a damaged or crafted record is a one-line `CheckpointError`, never a traceback or an absurd schedule."""
    def bad(field: str):
        raise CheckpointError(f"the checkpoint's time-budget record is damaged "
                              f"({field} = {repr(state.get(field))[:40]})")

    def whole(field: str, default):
        v = state.get(field, default)
        if v is None and default is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**53:
            bad(field)
        return v

    if not isinstance(state, dict):
        raise CheckpointError("the checkpoint's time-budget record is damaged (not a mapping)")
    origin, total = whole("origin", 0), whole("total_steps", None)
    pending = state.get("pending", [])
    if not isinstance(pending, (list, tuple)) or len(pending) > 16 or not all(
            isinstance(p, (int, float)) and not isinstance(p, bool) and 0 <= p <= 1 for p in pending):
        bad("pending")
    spent = state.get("spent_seconds", 0.0)
    if isinstance(spent, bool) or not isinstance(spent, (int, float)) or not math.isfinite(spent) or spent < 0:
        bad("spent_seconds")
    return origin, total, [float(p) for p in pending], float(spent)


class TimeBudget:
    """Steps that fit into ``minutes`` of wall-clock time (``minutes`` None or 0: no budget)."""

    WARM, MEASURE = 3, 12
    CHECKPOINTS = (0.10, 0.25, 0.50, 0.75, 0.90)

    def __init__(self, minutes: float | None, start_step: int, upper_bound: int, state: dict | None = None):
        self.minutes = minutes or None  # 0 turns a preset's budget off from the command line
        self.upper_bound = upper_bound
        self.origin = start_step  # the step at which the budget began (0 unless it was switched on later)
        self.estimated_total: int | None = None
        self.pending = list(self.CHECKPOINTS)
        self.spent_before = 0.0  # seconds used by earlier sessions of the run
        if state:
            self.origin, self.estimated_total, self.pending, self.spent_before = read_state(state)
        self.session_step = start_step
        self.started = time.time()
        self.mark_step: int | None = None
        self.mark_time: float | None = None
        self.seconds_per_step: float | None = None

    @property
    def active(self) -> bool:
        """True while estimates are still to be made."""
        return self.minutes is not None and (self.estimated_total is None or bool(self.pending))

    def spent(self) -> float:
        """Seconds of the budget used so far, over every session of the run."""
        return self.spent_before + (time.time() - self.started)

    def state(self) -> dict | None:
        """What a checkpoint keeps (None without a budget)."""
        if self.minutes is None:
            return None
        return {"origin": self.origin, "total_steps": self.estimated_total, "pending": list(self.pending),
                "spent_seconds": self.spent(), "minutes": self.minutes}

    def observe(self, step: int) -> bool:
        """Called after every step; True when a (new) estimate of the total is due."""
        done = step - self.session_step
        if done == self.WARM:
            self.mark_step, self.mark_time = step, time.time()
        if self.mark_step is None or step <= self.mark_step:
            return False
        if self.estimated_total is None:
            return step - self.mark_step >= self.MEASURE
        if self.pending and step >= self.origin + self.pending[0] * (self.estimated_total - self.origin):
            self.pending.pop(0)
            return True
        return False

    def total_steps(self, step: int) -> int:
        """A new estimate of the run's total steps from the throughput since the last one (rank 0's number)."""
        # called when `observe` says an estimate is due: under a budget, after the mark was taken
        assert self.minutes is not None and self.mark_step is not None and self.mark_time is not None
        now = time.time()
        self.seconds_per_step = (now - self.mark_time) / max(step - self.mark_step, 1)
        self.mark_step, self.mark_time = step, now
        remaining = self.minutes * 60 - self.spent()
        total = min(step + max(0, int(remaining / self.seconds_per_step)), self.upper_bound)
        total = max(int(D.broadcast_object(total)), step)
        self.estimated_total = total
        return total
