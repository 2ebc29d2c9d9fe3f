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

    # The checkpoint is at step 4 (epoch end); steps 5 and 6 are logged, then the run stops without saving them
    # (checkpoint_minutes is long and max_steps=6 lands mid-epoch: the stop checkpoint is at 6)...
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
