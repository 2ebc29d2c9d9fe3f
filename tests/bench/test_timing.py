"""The bench's timing: warm-up batches untimed, batches drawn from epoch after epoch, a hard time limit that is a
no-op where it cannot work, and peak memory."""

import threading

import pytest
import torch

from barlowtwins.bench import Timing, measure_batches, time_limit
from barlowtwins.bench.timing import _cycle, _peak_memory

CPU = torch.device("cpu")


def test_the_warm_up_batches_are_consumed_but_not_counted():
    seen = []
    t = measure_batches(iter(range(100)), seen.append, batch_size=8, iters=5, warmup=3, device=CPU)
    assert seen == list(range(8)) and isinstance(t, Timing) and t.batches == 5 and t.rate > 0


def test_batches_come_from_one_epoch_after_another_and_an_empty_one_is_an_error():
    epochs = []

    def epoch(e):
        epochs.append(e)
        return [f"{e}.{b}" for b in range(2)]

    it = _cycle(epoch)
    assert [next(it) for _ in range(5)] == ["0.0", "0.1", "1.0", "1.1", "2.0"] and epochs == [0, 1, 2]
    with pytest.raises(ValueError, match="fewer images than one batch"):
        next(_cycle(lambda e: []))


def test_a_limit_off_the_main_thread_or_of_zero_is_a_no_op():
    result = []

    def worker():
        with time_limit(0.01, "off the main thread"):
            threading.Event().wait(0.1)  # past the limit: no alarm can be armed here
        result.append("done")

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert result == ["done"]
    with time_limit(0):
        pass


def test_an_error_inside_the_block_disarms_the_timer():
    import signal

    with pytest.raises(KeyError):
        with time_limit(30):
            raise KeyError("the measurement's own error")
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_peak_memory_on_the_cpu_is_the_processes_resident_set():
    key, gib = _peak_memory(CPU)
    assert key == "host_max_rss_gib" and 0.01 < gib < 1024
