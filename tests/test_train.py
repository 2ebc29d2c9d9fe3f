"""Pretraining: exact resume from a checkpoint, export, config checks, and guarded failures."""

import json

import pytest
import torch
import yaml

from barlowtwins.checkpoint import load_backbone_state, load_backbone_weights, load_checkpoint
from barlowtwins.config import PretrainConfig
from barlowtwins.errors import CheckpointError, ConfigError, DataError
from barlowtwins.models import create_backbone
from barlowtwins.train import pretrain


def tiny_config(data_dir, out, **kw) -> PretrainConfig:
    base = dict(dataset="fashion-mnist", data_dir=str(data_dir), image_size=16, backbone="resnet18", stem="small",
                width=8, projector="32-32", epochs=2, batch_size=16, warmup_epochs=0.5, lr_weights=0.3,
                progress=False, log_every=2, out=str(out), seed=7)
    base.update(kw)
    return PretrainConfig(**base)


def test_resume_continues_exactly(fmnist_dir, tmp_path):
    straight = pretrain(tiny_config(fmnist_dir, tmp_path / "a"))
    assert straight["finished"] and straight["step"] == 8  # 64 images / 16 = 4 steps x 2 epochs

    stopped = pretrain(tiny_config(fmnist_dir, tmp_path / "b", max_steps=3))
    assert not stopped["finished"] and stopped["step"] == 3 and stopped["stopped_by"] == "max_steps"
    mid = load_checkpoint(tmp_path / "b" / "checkpoint.pth")
    assert mid["step"] == 3 and mid["optimizer"]["state"], "optimizer state is saved"
    assert not (tmp_path / "b" / "backbone.pth").exists()

    resumed = pretrain(tiny_config(fmnist_dir, tmp_path / "b"))
    assert resumed["finished"] and resumed["step"] == 8
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pth")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pth")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    for pid, state in a["optimizer"]["state"].items():
        torch.testing.assert_close(b["optimizer"]["state"][pid]["momentum_buffer"], state["momentum_buffer"],
                                   rtol=1e-5, atol=1e-6)
    events = [json.loads(line).get("event") for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert events.count("resume") == 1 and events[-1] == "done"


def test_run_folder_holds_config_metrics_and_backbone(fmnist_dir, tmp_path):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=1))
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["backbone"] == "resnet18" and saved["width"] == 8 and saved["batch_size"] == 16
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(r["loss"] > 0 and r["images_per_sec"] > 0 for r in steps)
    net = create_backbone("resnet18", stem="small", width=8)
    loaded = load_backbone_weights(net, load_backbone_state(tmp_path / "r" / "backbone.pth"))
    assert len(loaded) == len(net.state_dict())


def test_resume_with_other_settings_is_refused(fmnist_dir, tmp_path):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=1))
    with pytest.raises(ConfigError, match="was started with projector='32-32'"):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", projector="64-64"))


def test_unreadable_checkpoint_in_run_folder(fmnist_dir, tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "checkpoint.pth").write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r"))


@pytest.mark.parametrize("kw,error,match", [
    (dict(batch_size=1), ConfigError, "at least 2 samples"),
    (dict(batch_size=128), DataError, "fewer than one batch"),
    (dict(projector="64-x"), ConfigError, "malformed projector spec"),
    (dict(backbone="resnet5"), ConfigError, "unknown backbone"),
    (dict(loss_terms="diag"), ConfigError, "unknown loss_terms"),
    (dict(optimizer="adam"), ConfigError, "unknown optimizer 'adam'"),
    (dict(time_budget_minutes=-1), ConfigError, "--time-budget-minutes must be >= 0"),
])
def test_bad_settings_fail_before_work(fmnist_dir, tmp_path, kw, error, match):
    with pytest.raises(error, match=match):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", **kw))
    assert not (tmp_path / "r" / "checkpoint.pth").exists()


def test_online_knn_monitor_is_logged(fmnist_dir, tmp_path):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=2, knn_every=1, knn_max_samples=40))
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in records if r.get("event") == "knn"]
    assert [r["epoch"] for r in knn] == [1, 2]
    assert all(0 <= r["knn_k=20_top1"] <= 100 and 0 <= r["knn_k=200_top1"] <= 100 for r in knn)


def test_online_knn_needs_labels(image_tree, tmp_path):
    cfg = tiny_config(image_tree / "train", tmp_path / "r", dataset="images", knn_every=1)
    with pytest.raises(ConfigError, match="--knn-every needs labelled data"):
        pretrain(cfg)


def test_time_budget_fixes_the_schedule_and_resumes_with_it(fmnist_dir, tmp_path):
    s = pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=500, time_budget_minutes=0.15, log_every=5))
    assert s["finished"] and 15 <= s["step"] < 500 * 4
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    budgets = [r for r in records if r.get("event") == "budget"]
    assert budgets and budgets[-1]["total_steps"] == s["step"]
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pth")["budget_total_steps"] == s["step"]


def test_a_zero_time_budget_is_off(fmnist_dir, tmp_path):
    # A preset may carry a budget; --time-budget-minutes 0 goes back to the epoch count.
    s = pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=2, time_budget_minutes=0))
    assert s["finished"] and s["step"] == s["total_steps"] == 2 * 4
