"""Run monitor: data-wait share, C snapshots (schedule, content) and TensorBoard events read back."""

import json
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import says_both, tiny_config

from barlowtwins.training.monitor import RunMonitor, heatmap_rgb, read_snapshots
from barlowtwins.training.trainer import pretrain


class ListLog:
    def __init__(self):
        self.records = []

    def write(self, record):
        self.records.append(dict(record))


def test_heatmap_colours():
    img = heatmap_rgb(np.array([[-1.0, 0.0], [1.0, np.nan]]), scale=2)
    assert img.shape == (4, 4, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (0, 0, 255) and tuple(img[0, 2]) == (255, 255, 255)
    assert tuple(img[2, 0]) == (255, 0, 0) and tuple(img[2, 2]) == (255, 255, 255)  # NaN drawn as 0


def test_data_wait_share_counts_time_in_next():
    log = ListLog()
    mon = RunMonitor(log, None, None)

    def slow():
        for i in range(3):
            time.sleep(0.05)  # the loader
            yield i

    for _ in mon.batches(slow()):
        time.sleep(0.05)  # the step
    mon.write({"step": 3, "loss": 1.0})
    mon.write({"event": "checkpoint", "step": 3})
    rec = log.records[0]
    assert rec["data_wait_sec"] >= 0.15
    assert 0.3 < rec["data_wait_share"] < 0.8  # half the window is spent waiting
    assert "data_wait_sec" not in log.records[1]


def test_snapshot_schedule_is_geometric_on_log_steps(tmp_path):
    mon = RunMonitor(ListLog(), None, tmp_path, dims=4, log_every=10)
    for step in range(1, 101):
        mon.after_step(step, SimpleNamespace(c_block=torch.full((4, 4), step / 100)))
    mon.close()
    snaps = read_snapshots(tmp_path)
    assert [s["step"] for s in snaps] == [1, 10, 20, 30, 50, 80, 100]
    assert all(s["c"].shape == (4, 4) and np.allclose(s["c"], s["step"] / 100) for s in snaps)


def test_non_main_process_and_non_finite_blocks_write_nothing(tmp_path):
    mon = RunMonitor(ListLog(), None, None, dims=4)
    mon.after_step(1, SimpleNamespace(c_block=torch.zeros(4, 4)))
    mon.close()
    mon = RunMonitor(ListLog(), None, tmp_path, dims=4)
    mon.after_step(1, SimpleNamespace(c_block=torch.full((4, 4), float("nan"))))
    mon.close()
    assert read_snapshots(tmp_path) == []


def _check_run(out, last_step, dims):
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(0 <= r["data_wait_share"] <= 1 and r["data_wait_sec"] >= 0 for r in steps)
    snaps = read_snapshots(out)
    assert snaps[0]["step"] == 1 and snaps[-1]["step"] == last_step
    for s in snaps:
        assert s["c"].shape == (dims, dims) and np.all(np.abs(s["c"]) <= 1.0 + 1e-3)  # correlations
    return steps


def test_trainer_records_snapshots_in_memory(fmnist_dir, tmp_path):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=3, correlation_dims=16))
    _check_run(tmp_path / "r", 12, 16)


def test_trainer_records_snapshots_on_a_jpeg_folder(image_tree, tmp_path):
    # 12 files of 40 px: 3 steps of batch 4 per epoch; the block is clipped to the projector's 32 dimensions.
    pretrain(tiny_config(image_tree / "train", tmp_path / "r", dataset="images", batch_size=4, epochs=2, workers=0))
    _check_run(tmp_path / "r", 6, 32)


def test_correlation_dims_zero_turns_snapshots_off(fmnist_dir, tmp_path):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=1, correlation_dims=0))
    assert not (tmp_path / "r" / "correlation.jsonl").exists()


def test_tensorboard_event_file_holds_the_scalars_and_heat_maps(fmnist_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=2, tensorboard=True, correlation_dims=8))
    acc = EventAccumulator(str(tmp_path / "r" / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for name in ("loss", "on_diag", "off_diag", "lr_weights", "images_per_sec", "data_wait_share"):
        assert f"train/{name}" in tags["scalars"], tags
    records = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["loss"]) for r in records if "loss" in r]
    events = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in events] == [s for s, _ in logged]
    np.testing.assert_allclose([v for _, v in events], [v for _, v in logged], rtol=1e-6)
    assert "correlation/C_block" in tags["images"]
    assert [e.step for e in acc.Images("correlation/C_block")] == [s["step"] for s in read_snapshots(tmp_path / "r")]


@pytest.mark.parametrize("kw,match", [(dict(correlation_dims=-1), "--correlation-dims must be >= 0"),
                                      (dict(progress_seconds=-5), "--progress-seconds must be >= 0")])
def test_bad_monitoring_settings_fail_before_work(fmnist_dir, tmp_path, kw, match):
    from barlowtwins.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", **kw))
    says_both(e.value, match)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
