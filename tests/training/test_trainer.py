"""Pretraining: exact resume from a checkpoint, export, config checks, and guarded failures."""

import json

import pytest
import torch
import yaml
from conftest import tiny_config

from barlowtwins.errors import CheckpointError, ConfigError, DataError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.training.trainer import pretrain
from barlowtwins.weights.run_files import load_checkpoint
from barlowtwins.weights.sources import load_backbone_state, load_backbone_weights


def test_resume_continues_exactly(fmnist_dir, tmp_path):
    straight = pretrain(tiny_config(fmnist_dir, tmp_path / "a"))
    assert straight["finished"] and straight["step"] == 8  # 64 images / 16 = 4 steps x 2 epochs

    stopped = pretrain(tiny_config(fmnist_dir, tmp_path / "b", max_steps=3))
    assert not stopped["finished"] and stopped["step"] == 3 and stopped["stopped_by"] == "max_steps"
    mid = load_checkpoint(tmp_path / "b" / "checkpoint.pth")
    assert mid["step"] == 3 and mid["optimizer"]["state"], "optimizer state is saved"
    # The backbone is written with every checkpoint: a stopped run's backbone.pth/.safetensors is step 3's.
    for name in ("backbone.pth", "backbone.safetensors"):
        state = load_backbone_state(tmp_path / "b" / name).state
        assert state.keys() == {k[9:] for k in mid["model"] if k.startswith("backbone.")}
        assert all(torch.equal(v, mid["model"]["backbone." + k]) for k, v in state.items())

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


# ---- nothing non-finite is saved --------------------------------------------------------------------------------
def test_a_diverging_run_keeps_the_last_good_checkpoint(fmnist_dir, tmp_path, capsys):
    """The issue's reproduction: a checkpoint due at a step without a log line must not save NaN weights."""
    from barlowtwins.cli import main

    out = tmp_path / "r"
    code = main(["pretrain", "--dataset", "fashion-mnist", "--data-dir", str(fmnist_dir), "--image-size", "16",
                 "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32", "--epochs", "4",
                 "--batch-size", "16", "--no-progress", "--out", str(out), "--log-every", "10",
                 "--checkpoint-minutes", "0", "--max-steps", "13", "--lr-weights", "1e6", "--eta", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "training diverged by step" in err and "learning rates" in err and "lower --lr-weights" in err
    for path in [*out.glob("checkpoint*.pth"), *out.glob("backbone.pth")]:  # whatever is on disk is finite
        ckpt = load_checkpoint(path)
        state = ckpt.get("model", ckpt)
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path
    if (out / "checkpoint.pth").exists():
        assert f"last good checkpoint is {out / 'checkpoint.pth'} (step {load_checkpoint(out / 'checkpoint.pth')['step']})" in err


def test_non_finite_weights_are_never_checkpointed(fmnist_dir, tmp_path, monkeypatch):
    from barlowtwins.training.trainer import Trainer

    real = Trainer.train_step

    def poisoned(self, images):
        result = real(self, images)
        if self.step == 3:  # the loss of this step was finite, but the update left an Inf behind
            with torch.no_grad():
                self.raw_model.projector[0].weight[0, 0] = float("inf")
        return result

    monkeypatch.setattr(Trainer, "train_step", poisoned)
    with pytest.raises(FloatingPointError) as e:
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=3, log_every=10))
    message = str(e.value)
    assert "by step 3: projector.0.weight" in message and "overflowed the weights" in message
    assert "no checkpoint had been written" in message
    assert not list((tmp_path / "r").glob("checkpoint*"))


def test_non_finite_backbone_files_are_refused_by_readers(tmp_path):
    net = create_backbone("resnet18", stem="small", width=8)
    state = net.state_dict()
    state["conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(state, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError, match="non-finite values .* conv1.weight"):
        load_backbone_weights(create_backbone("resnet18", stem="small", width=8),
                              load_backbone_state(tmp_path / "backbone.pth"))
    from barlowtwins.cli import main

    assert main(["export", "--checkpoint", str(tmp_path / "backbone.pth"), "--output", str(tmp_path / "o.pth")]) == 2
    assert not (tmp_path / "o.pth").exists()


# ---- resume on any device, and --max-steps ------------------------------------------------------------------------
def test_resumed_optimizer_state_follows_the_model(fmnist_dir, tmp_path):
    """A resumed run placed elsewhere than the CPU it was loaded on (here: float64, standing in for a GPU) has every
    optimiser state tensor on its parameter's device and dtype."""
    from barlowtwins.runtime import distributed as D
    from barlowtwins.training.trainer import Trainer

    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=3))

    class Float64Trainer(Trainer):
        def _place(self, model):
            raw, called = super()._place(model)
            raw.double()
            return raw, raw

    t = Float64Trainer(tiny_config(fmnist_dir, tmp_path / "r"), D.DistInfo())
    assert t.step == 3
    checked = 0
    for group in t.optimizer.param_groups:
        for p in group["params"]:
            for value in t.optimizer.state[p].values():
                assert value.dtype == p.dtype == torch.float64 and value.device == p.device
                checked += 1
    assert checked == len(list(t.raw_model.parameters()))


def test_max_steps_means_stop_at_step_n_on_every_rerun(fmnist_dir, tmp_path):
    cfg = tiny_config(fmnist_dir, tmp_path / "r", max_steps=3)
    assert pretrain(cfg)["step"] == 3
    before = (tmp_path / "r" / "checkpoint.pth").read_bytes()
    again = pretrain(cfg)
    assert again["step"] == 3 and again["stopped_by"] == "max_steps" and again["exit_status"] == 0
    assert (tmp_path / "r" / "checkpoint.pth").read_bytes() == before, "no step was taken, nothing rewritten"


def test_stale_temporary_files_are_removed_at_start(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    stale = out / ".checkpoint.pth.tmp-999999999"  # no such process
    stale.write_bytes(b"\0" * 4096)
    pretrain(tiny_config(fmnist_dir, out, max_steps=1))
    assert not stale.exists()


def test_a_damaged_latest_checkpoint_resumes_from_the_previous(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "r"
    pretrain(tiny_config(fmnist_dir, out, max_steps=6))  # checkpoints at step 4 (epoch) and 6 (stop)
    data = (out / "checkpoint.pth").read_bytes()
    (out / "checkpoint.pth").write_bytes(data[: len(data) // 3])
    s = pretrain(tiny_config(fmnist_dir, out))
    assert s["finished"] and s["step"] == 8
    assert "resuming from the previous checkpoint checkpoint.1.pth" in capsys.readouterr().err


def test_kill_9_resumes_to_a_bit_identical_backbone(fmnist_dir, tmp_path):
    """Killed without warning (checkpoints at every log line) and run again: the same backbone, bit for bit."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "barlowtwins", "pretrain", "--dataset", "fashion-mnist", "--data-dir",
            str(fmnist_dir), "--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem", "small",
            "--projector", "32-32", "--epochs", "5", "--batch-size", "16", "--no-progress", "--log-every", "1",
            "--checkpoint-minutes", "0", "--seed", "3"]
    straight = subprocess.run(base + ["--out", str(tmp_path / "a")], env=env, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    proc = subprocess.Popen(base + ["--out", str(tmp_path / "b")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().count('"loss"') >= 7):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run(base + ["--out", str(tmp_path / "b")], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "backbone.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "backbone.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- flat under load --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["memory", "folder"])
@pytest.mark.timeout(900)
def test_memory_and_open_files_stay_flat_over_hundreds_of_steps(fmnist_dir, tmp_path, source, monkeypatch):
    """A few hundred tiny steps: after a warm-up, resident memory and open files do not grow."""
    psutil = pytest.importorskip("psutil")
    from conftest import make_image_folder

    from barlowtwins.training.trainer import Trainer

    proc = psutil.Process()
    samples = []
    real = Trainer.train_step

    def sampled(self, images):
        result = real(self, images)
        if self.step % 25 == 0:
            samples.append((self.step, proc.memory_info().rss, proc.num_fds()))
        return result

    monkeypatch.setattr(Trainer, "train_step", sampled)
    tiny = dict(image_size=8, width=4, projector="16-16", log_every=10, checkpoint_minutes=0.0)
    if source == "memory":  # 8 steps an epoch: 200 steps, a checkpoint at every epoch and log line
        cfg = tiny_config(fmnist_dir, tmp_path / "r", batch_size=8, epochs=25, **tiny)
    else:  # 16 JPEG/PNG files, 4 steps an epoch: 200 steps
        folder = make_image_folder(tmp_path / "images", per_class=8, size=12, splits=("train",))
        cfg = tiny_config(folder / "train", tmp_path / "r", dataset="images", batch_size=4, epochs=50, workers=0,
                          **tiny)
    s = pretrain(cfg)
    assert s["finished"] and s["step"] == 200, s
    after_warmup = [x for x in samples if x[0] >= 75]
    rss = [x[1] for x in after_warmup]
    fds = [x[2] for x in after_warmup]
    assert max(fds) - min(fds) <= 2, samples
    assert max(rss) - rss[0] < 20 * 2**20, [(step, r / 2**20) for step, r, _ in samples]  # < 20 MiB over 125 steps
