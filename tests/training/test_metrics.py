"""The metrics log and the loss window: exact means, and no step recorded twice after a resume."""

import json
from types import SimpleNamespace

import torch

from barlowtwins.training.metrics import LossWindow, MetricsLog


def test_window_means_match_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(7, 3, generator=g, dtype=torch.float64) * 100
    w = LossWindow(torch.device("cpu"))
    for loss, on, off in values:
        w.add(SimpleNamespace(loss=loss.float(), on_diag=on.float(), off_diag=off.float()))
    record = w.flush()
    ref = values.mean(0)
    assert record["steps"] == 7
    for key, r in zip(("loss", "on_diag", "off_diag"), ref.tolist()):
        assert abs(record[key] - r) < 1e-4 * abs(r)
    assert w.steps == 0 and float(w.sums.abs().sum()) == 0.0 and w.last is record


def test_rewind_drops_records_after_the_resumed_step(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for r in ({"event": "start", "step": 0}, {"step": 2, "loss": 1.0}, {"event": "checkpoint", "step": 2},
              {"step": 4, "loss": 0.9}, {"event": "knn", "step": 4}):
        log.write(r)
    with open(log.path, "a") as f:
        f.write('{"step": 6, "lo')  # a line torn by a kill mid-write
    assert log.rewind(2) == 2
    assert [json.loads(line) for line in log.path.read_text().splitlines()] == [
        {"event": "start", "step": 0}, {"step": 2, "loss": 1.0}, {"event": "checkpoint", "step": 2}]
    assert MetricsLog(None).rewind(3) == 0 and MetricsLog(None).records() == []


def test_a_resumed_run_records_each_step_once(fmnist_dir, tmp_path):
    from conftest import tiny_config

    from barlowtwins.training.trainer import pretrain

    # Checkpoints at steps 4 and 6 (two stops); steps 5 and 6 are logged after the first...
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=4, log_every=1))
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=6, log_every=1))
    # ...so simulate a kill after step 6 was logged but before its checkpoint: drop the newest checkpoint.
    store = tmp_path / "r"
    (store / "checkpoint.pth").unlink()
    (store / "checkpoint.pth.sha256").unlink()
    (store / "checkpoint.1.pth").rename(store / "checkpoint.pth")
    (store / "checkpoint.1.pth.sha256").rename(store / "checkpoint.pth.sha256")
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", log_every=1))
    steps = [r["step"] for r in MetricsLog(tmp_path / "r" / "metrics.jsonl").records() if "loss" in r]
    assert steps == list(range(1, 9))


def test_rewind_streams_and_drops_a_binary_tail(tmp_path):
    """A large log is rewound line by line (Python allocations stay far below its size), and torn or binary
    lines (a kill mid-append, a damaged disk) are dropped with the later steps."""
    import json
    import tracemalloc

    from barlowtwins.training.metrics import MetricsLog

    path = tmp_path / "metrics.jsonl"
    with open(path, "w") as f:
        for step in range(1, 60_001):
            f.write(json.dumps({"step": step, "loss": 1.0 / step, "pad": "x" * 200}) + "\n")
        f.write('{"event": "checkpoint"}\n')
    with open(path, "ab") as f:
        f.write(b"\x00\xff\xfe garbage {\"step\": 3\n\x89PNG")
    size = path.stat().st_size
    log = MetricsLog(path)
    tracemalloc.start()
    dropped = log.rewind(50_000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert dropped == 10_000
    assert peak < size / 10, (peak, size)
    records = log.records()
    assert len(records) == 50_001 and records[-2]["step"] == 50_000 and records[-1] == {"event": "checkpoint"}
    assert path.read_bytes().endswith(b'{"event": "checkpoint"}\n')
