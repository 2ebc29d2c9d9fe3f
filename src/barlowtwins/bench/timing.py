"""Timing for the benchmarks: batches timed after a warm-up with the device synchronised at both ends, a hard
time limit per measurement, peak memory."""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(make_epoch):
    """Batches from successive epochs, without end."""
    epoch = 0
    while True:
        empty = True
        for item in make_epoch(epoch):
            empty = False
            yield item
        if empty:
            raise ValueError("the data set has fewer images than one batch")
        epoch += 1


class MeasurementTimeout(Exception):
    """A measurement ran past its hard time limit (`time_limit`)."""


@contextlib.contextmanager
def time_limit(seconds: float | None, what: str = "the measurement") -> Iterator[None]:
    """Raise `MeasurementTimeout` inside the block once ``seconds`` have passed.

    SIGALRM, so a loader wait or a slow Python loop is interrupted; a kernel or C call that never returns is not
    (an outer ``timeout`` is the last resort). A no-op without a limit, off the main thread, or without
    ``signal.setitimer`` (Windows). Not nested: the previous SIGALRM handler is restored and the timer disarmed.
    """
    usable = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not seconds or seconds <= 0 or not usable:
        yield
        return

    def expire(signum, frame):
        raise MeasurementTimeout(f"{what} ran past its time limit of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Timing:
    """One timed run: ``rate`` samples/s over ``batches`` timed batches."""

    rate: float
    batches: int


def measure_batches(batches, consume, batch_size: int, iters: int, warmup: int, device: torch.device,
                    deadline: float | None = None) -> Timing:
    """Samples/s of ``consume(batch)`` over ``iters`` batches after ``warmup`` ones. Past ``deadline`` (a
    ``time.perf_counter()`` value) the timing ends after the batch in hand, at least one batch timed:
    `Timing.batches` says how many were."""
    it = iter(batches)
    for _ in range(warmup):
        consume(next(it))
    _sync(device)
    start = time.perf_counter()
    done = 0
    while done < iters:
        consume(next(it))
        done += 1
        if deadline is not None and time.perf_counter() > deadline:
            break
    _sync(device)
    return Timing(done * batch_size / (time.perf_counter() - start), done)


def time_batches(batches, consume, batch_size: int, iters: int, warmup: int, device: torch.device) -> float:
    """Samples/s of ``consume(batch)`` over ``iters`` batches after ``warmup`` ones (`measure_batches`)."""
    return measure_batches(batches, consume, batch_size, iters, warmup, device).rate


def _peak_memory(device: torch.device) -> tuple[str, float]:
    if device.type == "cuda":
        return "device_max_allocated_gib", torch.cuda.max_memory_allocated(device) / 2**30
    import resource  # Unix only: imported where the CPU path needs it

    return "host_max_rss_gib", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
