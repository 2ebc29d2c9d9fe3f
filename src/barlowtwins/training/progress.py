"""Progress output that fits where it goes: a tqdm bar on a terminal, plain lines in a log file.

A bar redraws itself with carriage returns, which a log file (SLURM, CI, ``| tee``) keeps as thousands of
lines. When stdout is not a terminal, :class:`Progress` prints one plain line every ``interval`` seconds
instead::

    pretrain step 120/1801 (6.7%) loss 812.3 img/s 431 epoch 0.27 elapsed 0:00:31 eta 0:07:12

Either way the total is where the run will really end: the schedule's length, capped by ``--max-steps``, and
updated when a time budget fixes the length; a ``--time-limit-minutes`` or ``--time-budget-minutes`` is shown and
caps the ETA. The ETA is measured from the first step on (its one-off start-up costs left out).

The interface is tqdm's (``update``, ``set_postfix``, ``total``, ``refresh``, ``close``), so a loop written for
a tqdm bar takes it unchanged.
"""

from __future__ import annotations

import datetime
import sys
import time
from typing import TextIO

from barlowtwins.runtime.console import on_terminal, terminal_bar


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=max(0, round(seconds))))


class Progress:
    """Progress of a run of ``total`` steps, started at step ``initial``.

    Args:
        total: the schedule's number of steps (may be changed later through the ``total`` attribute).
        initial: the step the run starts (or resumes) at.
        max_steps: stop step, when the run stops before the schedule ends (``--max-steps``).
        time_limit_minutes: wall-clock limit of this process (``--time-limit-minutes``), shown and used to cap ETA.
        budget_minutes: the time budget the schedule is fitted into (``--time-budget-minutes``), likewise.
        interval: seconds between two plain lines (no terminal); 0 prints a line at every update.
        stream: where to write (default ``sys.stdout``).
        tty: force the bar (True) or plain lines (False); default: whether ``stream`` is a terminal.
    """

    def __init__(self, total: int, initial: int = 0, *, max_steps: int | None = None,
                 time_limit_minutes: float | None = None, budget_minutes: float | None = None,
                 interval: float = 30.0, stream: TextIO | None = None, tty: bool | None = None,
                 desc: str = "pretrain"):
        self.stream = stream if stream is not None else sys.stdout
        self.tty = on_terminal(self.stream) if tty is None else tty
        self.max_steps = max_steps
        self.limit = time_limit_minutes * 60 if time_limit_minutes else None
        self.budget = budget_minutes * 60 if budget_minutes else None
        # (step, time) of the first update: the ETA's rate is measured from there
        self._rate_mark: tuple[int, float] | None = None
        self.interval = max(0.0, float(interval))
        self.desc = desc
        self.n = self.initial = int(initial)
        self.postfix: dict[str, str] = {}
        self.started = time.time()
        self._last_line: float | None = None
        self._schedule_total = int(total)
        self._bar = None
        if self.tty:
            label = desc + "".join(f" ({what} {_clock(t)})" for what, t in self._caps())
            self._bar = terminal_bar(total=self.end, initial=self.n, unit="step", desc=label, stream=self.stream,
                                     enabled=True)

    @classmethod
    def for_run(cls, cfg, total: int, initial: int = 0, **kw) -> "Progress":
        """A progress display for a ``PretrainConfig`` run."""
        return cls(total, initial, max_steps=cfg.max_steps, time_limit_minutes=cfg.time_limit_minutes,
                   budget_minutes=cfg.time_budget_minutes, interval=cfg.progress_seconds, **kw)

    # ---- the run's real end ----------------------------------------------------------------------------
    @property
    def end(self) -> int:
        """The step the run will stop at: the schedule's end, or ``max_steps`` when that comes first."""
        return min(self._schedule_total, self.max_steps) if self.max_steps is not None else self._schedule_total

    @property
    def total(self) -> int:
        return self.end

    @total.setter
    def total(self, steps: int) -> None:  # a time budget fixed the schedule's length
        self._schedule_total = int(steps)
        if self._bar is not None:
            self._bar.total = self.end

    # ---- tqdm's interface ------------------------------------------------------------------------------
    def update(self, n: int = 1) -> None:
        self.n += n
        if self._rate_mark is None:
            self._rate_mark = (self.n, time.time())
        if self._bar is not None:
            self._bar.update(n)
        elif self._last_line is None or time.time() - self._last_line >= self.interval:
            self._print()

    def set_postfix(self, **values) -> None:
        self.postfix = {k: str(v) for k, v in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def refresh(self) -> None:
        if self._bar is not None:
            self._bar.refresh()

    def write(self, line: str) -> None:
        """A message line (an online-kNN figure): above the bar on a terminal, else a plain line."""
        if self._bar is not None:
            self._bar.write(line, file=self.stream)  # tqdm clears the bar, prints the line, redraws the bar
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._last_line is None or self.n != self._printed_step:
            self._print()  # the last step always has a line

    # ---- plain lines -----------------------------------------------------------------------------------
    def eta_seconds(self) -> float | None:
        """Seconds to the end at the rate seen since the first step, capped by a time limit or budget; None until
        two updates have been seen."""
        if self._rate_mark is None:
            return None
        now = time.time()
        step0, t0 = self._rate_mark
        if self.n <= step0 or now <= t0:
            return None
        eta = (self.end - self.n) * (now - t0) / (self.n - step0)
        for _, seconds in self._caps():
            eta = min(eta, max(0.0, seconds - (now - self.started)))
        return eta

    def _caps(self) -> list[tuple[str, float]]:
        return [(what, t) for what, t in (("time limit", self.limit), ("budget", self.budget)) if t is not None]

    def line(self) -> str:
        end = max(self.end, 1)
        parts = [f"{self.desc} step {self.n}/{self.end} ({100 * self.n / end:.1f}%)"]
        labels = {"loss": "loss", "img_s": "img/s", "epoch": "epoch"}
        parts += [f"{labels.get(k, k)} {v}" for k, v in self.postfix.items()]
        parts.append(f"elapsed {_clock(time.time() - self.started)}")
        eta = self.eta_seconds()
        if eta is not None:
            parts.append(f"eta {_clock(eta)}")
        parts += [f"{what} {_clock(t)}" for what, t in self._caps()]
        return " ".join(parts)

    def _print(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._last_line = time.time()
        self._printed_step = self.n
