"""Stop requests for a long run: SIGTERM, SIGUSR1 (SLURM's warning before the time limit, or a pre-emption) and a
first Ctrl-C ask the run to stop at the next step with a checkpoint; a second Ctrl-C interrupts at once.

The handlers are process-wide and meant to be installed on the first line of the program (`install`), so a
stop that arrives during set-up (minutes on a large folder scan) is remembered too: the trainer sees it before
its first step, exits with `GRACEFUL_STOP_EXIT` and asks SLURM to requeue the job. They stay installed until the
process exits, so a late SIGUSR1 (after the last checkpoint) cannot kill the process either.

`decide` is the trainer's decision after a step (stop: a signal, the time limit, ``--max-steps``; and whether a
checkpoint is due), the same on every rank.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass

import torch

from barlowtwins.runtime import distributed as D

# A run that stopped before the end of its schedule because it was asked to (a stop signal, the time limit)
# exits with this status after writing its checkpoint: "not finished, run the same command again to resume".
# 75 is EX_TEMPFAIL of sysexits.h ("temporary failure; the user is invited to retry").
GRACEFUL_STOP_EXIT = 75

STOP_SIGNALS = tuple(s for s in (getattr(signal, "SIGUSR1", None), signal.SIGTERM, signal.SIGINT) if s is not None)


class StopSignal:
    """Remembers the first stop signal received (``received``: its number, or None)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict = {}

    @property
    def installed(self) -> bool:
        return bool(self._old)

    def install(self) -> bool:
        """Install the handlers (main thread only); False when they already were, or cannot be."""
        if self._old:
            return False
        for sig in STOP_SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not in the main thread: the caller's own handlers stay
                break
        return bool(self._old)

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            # print, not logging: a signal handler runs between any two bytecodes of the main thread, possibly
            # inside a logging handler holding its lock, which logging does not support re-entering from a signal
            print("\nstopping after this step with a checkpoint (Ctrl-C again to abort)", flush=True)
        if self.received is None:
            self.received = signum

    def restore(self) -> None:
        """Put the previous handlers back (and forget any signal received)."""
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
        self.received = None


# The process's one instance: the CLI installs it first thing, the trainer reads it.
STOP = StopSignal()


def install() -> bool:
    """Start listening for stop signals now; True if this call installed the handlers."""
    return STOP.install()


REASONS = ("finished", "max_steps", "time_limit", "signal", "write_error")


@dataclass(frozen=True)
class Decision:
    """What every rank does after a step: keep going (``reason`` "finished") or stop, and whether to write a
    checkpoint now."""

    reason: str
    checkpoint: bool


def decide(step: int, *, max_steps: int | None, time_limit_minutes: float | None, start_time: float, now: float,
           stop: StopSignal = STOP, write_failed: bool = False, checkpoint_due: bool = False) -> Decision:
    """The trainer's decision after ``step``, one answer for every rank, in one all-reduce (max) under
    torch.distributed: any rank's stop reason stops every rank (the most pressing one wins), and a checkpoint is
    written when rank 0 says one is due (only rank 0's ``checkpoint_due`` counts, so ranks whose clocks differ
    cannot disagree, and none can enter the checkpoint's collective while another is in the next step's).
    ``write_failed``: rank 0 could not append to its logs (disk full, read-only file system): stop with a
    checkpoint while one can still be written. ``now`` and ``start_time`` are the caller's clock."""
    code = 0
    if write_failed:
        code = 4
    elif stop.received is not None:
        code = 3
    elif time_limit_minutes is not None and now - start_time > time_limit_minutes * 60:
        code = 2
    elif max_steps is not None and step >= max_steps:
        code = 1
    due: bool | int = bool(checkpoint_due) and D.rank() == 0
    if D.world_size() > 1:
        t = torch.tensor([code, int(due)], device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        code, due = (int(v) for v in t.tolist())
    return Decision(REASONS[code], bool(due))


def stop_reason(step: int, *, max_steps: int | None, time_limit_minutes: float | None, start_time: float,
                stop: StopSignal = STOP, write_failed: bool = False) -> str:
    """Why the run should stop now (``finished`` = keep going): `decide` without a checkpoint question, on the
    wall clock."""
    return decide(step, max_steps=max_steps, time_limit_minutes=time_limit_minutes, start_time=start_time,
                  now=time.time(), stop=stop, write_failed=write_failed).reason
