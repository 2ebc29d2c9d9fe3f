"""A wall-clock budget turned into a step count, kept across any number of resumes.

`TimeBudget` times a few steps (the very first ones, with their one-off start-up costs, are skipped), makes a
first estimate of how many steps fit, then corrects it at 10%, 25% and 50% of the run from the throughput seen
since the last estimate (early steps are often faster than steady state). Estimates happen at step counts
every rank agrees on, and rank 0's number is broadcast.

Its `state()` goes into every checkpoint: the time already spent, the chosen total and the corrections still
due. A resumed run restores it, so the schedule (and the learning rate) continues where it was instead of
starting a new budget. `warmup_steps` puts the warm-up inside the budget.
"""

from __future__ import annotations

import time

from barlowtwins.runtime import distributed as D

# Under a budget the warm-up keeps its configured length but takes at most this share of the budgeted steps
# (a warm-up longer than the whole budget would leave the learning rate rising until the end).
MAX_WARMUP_SHARE = 0.2


def warmup_steps(configured: int, total_steps: int, budgeted: bool) -> int:
    """The warm-up length of a schedule of ``total_steps``: as configured, capped under a budget."""
    if not budgeted:
        return configured
    return min(configured, round(MAX_WARMUP_SHARE * total_steps))


class TimeBudget:
    """Steps that fit into ``minutes`` of wall-clock time (``minutes`` None or 0: no budget)."""

    WARM, MEASURE = 3, 12
    CHECKPOINTS = (0.10, 0.25, 0.50)

    def __init__(self, minutes: float | None, start_step: int, upper_bound: int, state: dict | None = None):
        self.minutes = minutes or None  # 0 turns a preset's budget off from the command line
        self.upper_bound = upper_bound
        self.origin = start_step  # the step at which the budget began (0 unless it was switched on later)
        self.estimated_total: int | None = None
        self.pending = list(self.CHECKPOINTS)
        self.spent_before = 0.0  # seconds used by earlier sessions of the run
        if state:
            self.origin = int(state.get("origin", 0))
            total = state.get("total_steps")
            self.estimated_total = int(total) if total is not None else None
            self.pending = [float(p) for p in state.get("pending", [])]
            self.spent_before = float(state.get("spent_seconds", 0.0))
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
        now = time.time()
        self.seconds_per_step = (now - self.mark_time) / max(step - self.mark_step, 1)
        self.mark_step, self.mark_time = step, now
        remaining = self.minutes * 60 - self.spent()
        total = min(step + max(0, int(remaining / self.seconds_per_step)), self.upper_bound)
        total = max(int(D.broadcast_object(total)), step)
        self.estimated_total = total
        return total
