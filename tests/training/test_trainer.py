"""Pretraining: exact resume from a checkpoint, export, config checks, and guarded failures."""

import json
import re

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


def test_mixed_barlow_twins_runs_logs_its_term_and_resumes_exactly(fmnist_dir, tmp_path):
    """The Mixed Barlow Twins regulariser on: its draws are functions of (seed, step), so a stopped and resumed
    run ends where the straight one does; metrics.jsonl records the term."""
    straight = pretrain(tiny_config(fmnist_dir, tmp_path / "a", mix_weight=4.0, mix_block=8))
    pretrain(tiny_config(fmnist_dir, tmp_path / "b", mix_weight=4.0, mix_block=8, max_steps=3))
    resumed = pretrain(tiny_config(fmnist_dir, tmp_path / "b", mix_weight=4.0, mix_block=8))
    assert straight["step"] == resumed["step"] == 8
    a = load_checkpoint(tmp_path / "a" / "checkpoint.pth")
    b = load_checkpoint(tmp_path / "b" / "checkpoint.pth")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    plain = pretrain(tiny_config(fmnist_dir, tmp_path / "c"))
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pth")
    assert plain["step"] == 8
    assert any(not torch.allclose(c["model"][k], v) for k, v in a["model"].items() if v.is_floating_point())
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    mixes = [r["mix"] for r in records if "loss" in r]
    assert mixes and all(m > 0 for m in mixes)
    assert not any("mix" in json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines())


def straight_and_resumed(fmnist_dir, tmp_path, **kw):
    """The last checkpoints of a straight 8-step run (``a``) and of one stopped at step 3 and resumed (``b``)."""
    straight = pretrain(tiny_config(fmnist_dir, tmp_path / "a", **kw))
    pretrain(tiny_config(fmnist_dir, tmp_path / "b", max_steps=3, **kw))
    resumed = pretrain(tiny_config(fmnist_dir, tmp_path / "b", **kw))
    assert straight["step"] == resumed["step"] == 8
    return load_checkpoint(tmp_path / "a" / "checkpoint.pth"), load_checkpoint(tmp_path / "b" / "checkpoint.pth")


ALL_OPTIONS = dict(mix_weight=4.0, mix_block=8, multicrop_count=2, multicrop_weight=0.5, progressive_start=8,
                   progressive_epochs=1)


def test_a_run_with_every_option_on_resumes_bit_identically_after_a_stop_mid_epoch(fmnist_dir, tmp_path):
    """Mixed BT, multi-crop and progressive resolution (8 px in epoch 0, 16 px after) on: a run stopped at step 3
    of a 4-step epoch and resumed ends with the weights and optimiser state of the straight run, to the bit; the
    log records each term and the view size."""
    a, b = straight_and_resumed(fmnist_dir, tmp_path, **ALL_OPTIONS)
    assert all(torch.equal(b["model"][k], v) for k, v in a["model"].items())
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(b["optimizer"]["state"][pid]["momentum_buffer"], state["momentum_buffer"])
    records = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert steps and all(r["crops"] > 0 and r["mix"] > 0 for r in steps)
    assert {r["image_size"] for r in steps} == {8, 16}
    plain = pretrain(tiny_config(fmnist_dir, tmp_path / "c", mix_weight=4.0, mix_block=8, progressive_start=8,
                                 progressive_epochs=1))
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pth")
    assert plain["step"] == 8 and any(not torch.equal(c["model"][k], v) for k, v in a["model"].items())


def test_a_resume_with_other_multicrop_settings_is_refused(fmnist_dir, tmp_path):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=2, multicrop_count=2))
    with pytest.raises(ConfigError, match="multicrop_count"):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", multicrop_count=4))


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
    (dict(time_budget_minutes=-1), ConfigError, "time_budget_minutes must be >= 0"),
])
def test_bad_settings_fail_before_work(fmnist_dir, tmp_path, kw, error, match):
    with pytest.raises(error, match=match):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", **kw))
    assert not (tmp_path / "r" / "checkpoint.pth").exists()


def test_online_knn_monitor_is_logged(fmnist_dir, tmp_path, capsys):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=2, knn_every=1, knn_max_samples=40))
    said = [line for line in capsys.readouterr().out.splitlines() if "online kNN" in line]
    assert [line.split(":")[0] for line in said] == ["epoch 1", "epoch 2"], said
    assert re.fullmatch(r"epoch 1: online kNN top-1 k=20 \d+\.\d\d, k=200 \d+\.\d\d", said[0]), said
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    knn = [r for r in records if r.get("event") == "knn"]
    assert [r["epoch"] for r in knn] == [1, 2]
    assert all(0 <= r["knn_k=20_top1"] <= 100 and 0 <= r["knn_k=200_top1"] <= 100 for r in knn)


def test_online_knn_needs_labels(image_tree, tmp_path):
    cfg = tiny_config(image_tree / "train", tmp_path / "r", dataset="images", knn_every=1)
    with pytest.raises(ConfigError, match="knn_every needs labelled data"):
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
        step = load_checkpoint(out / "checkpoint.pth")["step"]
        assert f"last good checkpoint is {out / 'checkpoint.pth'} (step {step})" in err


def test_non_finite_weights_are_never_checkpointed(fmnist_dir, tmp_path, monkeypatch):
    from barlowtwins.training.trainer import Trainer

    real = Trainer.train_step

    def poisoned(self, images):
        result = real(self, images)
        if self.step == 3:  # the loss of this step was finite, but the update left an Inf behind
            with torch.no_grad():
                self.run_parts.model.projector[0].weight[0, 0] = float("inf")
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
def test_resumed_optimizer_state_follows_the_model(fmnist_dir, tmp_path, monkeypatch):
    """A resumed run placed elsewhere than the CPU it was loaded on (here: float64, standing in for a GPU) has every
    optimiser state tensor on its parameter's device and dtype."""
    from barlowtwins.runtime import distributed as D
    from barlowtwins.training import run as R
    from barlowtwins.training.trainer import Trainer

    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=3))
    real = R.place_model

    def float64(model, device, **kw):
        placed = real(model, device, **kw)
        placed.raw.double()
        return placed

    monkeypatch.setattr(R, "place_model", float64)
    t = Trainer(tiny_config(fmnist_dir, tmp_path / "r"), D.DistInfo())
    r = t.run_parts
    assert t.step == 3
    checked = 0
    for group in r.optimizer.param_groups:
        for p in group["params"]:
            for value in r.optimizer.state[p].values():
                assert value.dtype == p.dtype == torch.float64 and value.device == p.device
                checked += 1
    assert checked == len(list(r.model.parameters()))


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
    pretrain(tiny_config(fmnist_dir, out, max_steps=4))  # checkpoints at steps 4 and 6 (two stops)
    pretrain(tiny_config(fmnist_dir, out, max_steps=6))
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
@pytest.mark.parametrize("source", ["memory", "folder", "every-option"])
@pytest.mark.timeout(900)
def test_memory_and_open_files_stay_flat_over_hundreds_of_steps(fmnist_dir, tmp_path, source, monkeypatch):
    """A few hundred tiny steps: after a warm-up, resident memory and open files do not grow; with every option
    on, over a progressive ramp (8, 12, 16 px) that re-plans the views twice inside the measured window."""
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
    elif source == "every-option":  # 16 px, from 8 px over 20 epochs (160 steps): 12 px at step 80, 16 at 160
        options = {**tiny, **ALL_OPTIONS, "image_size": 16, "progressive_epochs": 20}
        cfg = tiny_config(fmnist_dir, tmp_path / "r", batch_size=8, epochs=25, **options)
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


# ---- faults: a second run, a full disk, a failed log append, a kill between files ------------------------------
def _cli_args(data_dir, out, *extra):
    return ["pretrain", "--dataset", "fashion-mnist", "--data-dir", str(data_dir), "--image-size", "16",
            "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32", "--epochs", "2",
            "--batch-size", "16", "--no-progress", "--log-every", "1", "--seed", "7", "--out", str(out), *extra]


def test_a_second_run_on_the_same_folder_is_one_line_and_touches_nothing(fmnist_dir, tmp_path, capsys):
    from barlowtwins.cli import main
    from barlowtwins.runtime.lock import FolderLock

    out = tmp_path / "run"
    assert pretrain(tiny_config(fmnist_dir, out, max_steps=2))["step"] == 2
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".barlowtwins.lock"}
    with FolderLock(out):  # the first run, still going
        code = main(_cli_args(fmnist_dir, out, "--lr-weights", "0.1"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.count("\n") == 0 and "in use by pid" in err and "Traceback" not in err, err
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".barlowtwins.lock"}
    assert after == before, "config.yaml, metrics and checkpoints untouched"
    # once the first run has ended, the same command resumes
    assert main(_cli_args(fmnist_dir, out, "--max-steps", "3")) == 0


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="RLIMIT_FSIZE")
def test_a_full_disk_while_checkpointing_is_one_line_exit_2_and_keeps_the_last_checkpoint(fmnist_dir, tmp_path):
    """A real failing write in the middle of the checkpoint (the file-size limit stands in for a full disk: torch's
    zip writer fails the same way): one line, exit 2, the previous checkpoint intact and resumable."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    out = tmp_path / "run"
    assert pretrain(tiny_config(fmnist_dir, out, max_steps=2))["step"] == 2
    ckpt_size = (out / "checkpoint.pth").stat().st_size
    backbone_size = (out / "backbone.pth").stat().st_size
    assert backbone_size < ckpt_size * 0.8
    limit = (ckpt_size + backbone_size) // 2  # the backbone files still fit, the checkpoint does not

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "barlowtwins", *_cli_args(fmnist_dir, out, "--max-steps", "4")],
                         env=env, capture_output=True, text=True, preexec_fn=limited, timeout=300)
    err = run.stderr.strip()
    assert run.returncode == 2, err
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert "cannot write a checkpoint" in err and "checkpoint.pth is intact" in err, err
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 2
    assert not [p for p in out.iterdir() if ".tmp-" in p.name], "no temporary file left"
    assert pretrain(tiny_config(fmnist_dir, out, max_steps=4))["step"] == 4  # space again: it resumes


def test_a_failed_log_append_stops_with_a_checkpoint(fmnist_dir, tmp_path, monkeypatch, capsys):
    """metrics.jsonl cannot be appended to mid-run (disk full): the run stops at once with a checkpoint of the
    steps made, one line, exit 2, and no torn line; the same command resumes."""
    import errno

    from barlowtwins.cli import main
    from barlowtwins.training import metrics

    out = tmp_path / "run"
    real_append, calls = metrics.append_line, [0]

    def fills_up(path, line):
        calls[0] += 1
        if calls[0] == 4:  # the start record, then three step records
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_append(path, line)

    monkeypatch.setattr(metrics, "append_line", fills_up)
    code = main(_cli_args(fmnist_dir, out))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err and err.count("\n") == 0, err
    assert "free disk space" in err and "checkpoint at step 3" in err, err
    assert load_checkpoint(out / "checkpoint.pth")["step"] == 3
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    monkeypatch.setattr(metrics, "append_line", real_append)
    assert main(_cli_args(fmnist_dir, out)) == 0


def test_backbone_files_follow_the_checkpoint_after_a_kill_between_them(fmnist_dir, tmp_path, monkeypatch):
    """Killed after the checkpoint of step 3 was written but before its backbone files: the rerun (which reaches
    --max-steps at once) leaves backbone.pth and backbone.safetensors of step 3, as it says."""
    from barlowtwins.training import trainer as T

    out = tmp_path / "run"
    pretrain(tiny_config(fmnist_dir, out, max_steps=2, checkpoint_minutes=0))
    step2 = load_backbone_state(out / "backbone.pth").state

    class Killed(BaseException):
        pass

    real, calls = T.write_run_backbone, [0]

    def killed(*args, **kwargs):  # the resume's own rewrite passes; the one after step 3's checkpoint dies
        calls[0] += 1
        if calls[0] == 2:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "write_run_backbone", killed)
    with pytest.raises(Killed):
        pretrain(tiny_config(fmnist_dir, out, max_steps=3, checkpoint_minutes=0))
    monkeypatch.undo()
    ckpt = load_checkpoint(out / "checkpoint.pth")
    assert ckpt["step"] == 3
    assert all(torch.equal(step2[k], v) for k, v in load_backbone_state(out / "backbone.pth").state.items())
    again = pretrain(tiny_config(fmnist_dir, out, max_steps=3))
    assert again["step"] == 3
    for name in ("backbone.pth", "backbone.safetensors"):
        state = load_backbone_state(out / name).state
        assert all(torch.equal(v, ckpt["model"]["backbone." + k]) for k, v in state.items()), name


def test_an_out_folder_name_over_255_bytes_is_one_line(fmnist_dir, tmp_path, capsys):
    from barlowtwins.cli import main

    code = main(_cli_args(fmnist_dir, tmp_path / ("x" * 300)))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "255" in err and "Traceback" not in err and err.count("\n") == 0, err


# ---- honest reruns ----------------------------------------------------------------------------------------------
def test_a_finished_budget_run_rerun_with_another_budget_is_refused(fmnist_dir, tmp_path, capsys):
    from barlowtwins.cli import main

    out = tmp_path / "r"
    args = _cli_args(fmnist_dir, out, "--epochs", "50", "--log-every", "5")
    assert main(args + ["--time-budget-minutes", "0.1"]) == 0
    before = (out / "config.yaml").read_text()
    capsys.readouterr()
    assert main(args + ["--time-budget-minutes", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "planned for --time-budget-minutes 0.1, not 0.3" in err and err.count("\n") == 0, err
    assert (out / "config.yaml").read_text() == before, "config.yaml still describes what trained"


def test_a_finished_run_rerun_with_more_epochs_continues_and_says_so(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "r"
    assert pretrain(tiny_config(fmnist_dir, out, epochs=2))["step"] == 8
    capsys.readouterr()
    again = pretrain(tiny_config(fmnist_dir, out, epochs=3))
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("resumed from step 8 of 12 (epoch 2.00)") and "--epochs 2 -> 3" in first, first
    assert again["finished"] and again["step"] == 12
    assert yaml.safe_load((out / "config.yaml").read_text())["epochs"] == 3
    # the same again: nothing to do, and it says so
    pretrain(tiny_config(fmnist_dir, out, epochs=3))
    assert "already complete" in capsys.readouterr().out.splitlines()[0]


def test_the_max_steps_message_says_what_a_rerun_does(fmnist_dir, tmp_path, capsys):
    from barlowtwins.cli import main

    out = tmp_path / "r"
    assert main(_cli_args(fmnist_dir, out, "--max-steps", "3")) == 0
    said = capsys.readouterr().out
    assert "reached --max-steps 3 at step 3 of the 8-step schedule" in said and "larger --max-steps" in said, said
    assert main(_cli_args(fmnist_dir, out, "--max-steps", "3")) == 0
    said = capsys.readouterr().out
    assert "resumed from step 3 of 8" in said and "reached --max-steps 3 at step 3" in said, said


def test_resume_on_a_changed_folder_is_refused_unless_accepted(image_tree, tmp_path, capsys):
    """Steps index samples by position: a file added to the folder would make the resumed run train on other
    images than the interrupted one. Refused in one line before any step; --accept-data-change resumes."""
    import shutil

    data = image_tree / "train"
    out = tmp_path / "r"
    cfg = dict(dataset="images", image_size=16, batch_size=4, epochs=3)
    assert pretrain(tiny_config(data, out, max_steps=2, **cfg))["step"] == 2
    first = next(p for p in sorted(data.rglob("*")) if p.suffix in (".jpg", ".png"))
    shutil.copy(first, first.with_name("added" + first.suffix))
    with pytest.raises(DataError, match="accept_data_change") as e:
        pretrain(tiny_config(data, out, max_steps=3, **cfg))
    assert "--accept-data-change" in e.value.cli
    assert "\n" not in str(e.value) and load_checkpoint(out / "checkpoint.pth")["step"] == 2
    assert pretrain(tiny_config(data, out, max_steps=3, accept_data_change=True, **cfg))["step"] == 3
    assert "resuming anyway" in capsys.readouterr().err


def test_a_worker_error_prints_without_its_class_path():
    from barlowtwins.cli import _one_line

    raised = RuntimeError("Caught DataError in DataLoader worker process 0.\nTraceback (most recent call last):\n"
                          "  File \"x.py\", line 1\nbarlowtwins.errors.DataError: image a.jpg is missing (deleted?)")
    assert _one_line(raised) == "image a.jpg is missing (deleted?)"
    assert _one_line(ValueError("ConfigError: bad --width")) == "bad --width"


def test_pretrain_names_every_unreadable_file_once_at_the_end(image_tree, tmp_path, capsys):
    from barlowtwins.cli import main

    data = image_tree / "train"
    bad = data / "zz_truncated.jpg"
    good = next(p for p in sorted(data.rglob("*.jpg")))
    bad.write_bytes(good.read_bytes()[:200])
    code = main(["pretrain", "--dataset", "images", "--data-dir", str(data), "--image-size", "16", "--backbone",
                 "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32", "--epochs", "3",
                 "--batch-size", "4", "--no-progress", "--workers", "0", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 0, err
    last = [ln for ln in err.splitlines() if ln.startswith("warning: skipped")]
    assert len(last) == 1 and str(bad) in last[0] and "1 unreadable file" in last[0], err


def test_progressive_resolution_trains_logs_its_sizes_and_resumes_exactly(fmnist_dir, tmp_path):
    a, b = straight_and_resumed(fmnist_dir, tmp_path, image_size=16, progressive_start=8, progressive_epochs=1,
                                epochs=2)
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6, msg=k)
    sizes = [json.loads(line).get("image_size") for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    sizes = [s for s in sizes if s is not None]
    assert sizes[0] == 8 and sizes[-1] == 16 and sizes == sorted(sizes)


def test_a_progressive_start_above_the_image_size_is_refused_before_the_run_folder(fmnist_dir, tmp_path):
    with pytest.raises(ConfigError, match="progressive_start 32 is above image_size 16"):
        pretrain(tiny_config(fmnist_dir, tmp_path / "r", progressive_start=32, progressive_epochs=1))
    assert not (tmp_path / "r").exists()


# ---- many ranks: one decision for all ------------------------------------------------------------------------
def _two_rank_config(data_dir, out, **kw) -> dict:
    base = dict(dataset="fashion-mnist", data_dir=str(data_dir), image_size=16, backbone="resnet18", stem="small",
                width=8, projector="32-32", epochs=2, batch_size=16, warmup_epochs=0.5, lr_weights=0.3,
                progress=False, log_every=1, out=str(out), seed=11, checkpoint_minutes=0.5)
    return {**base, **kw}


def test_ranks_whose_clocks_differ_checkpoint_at_the_same_steps_and_resume_exactly(fmnist_dir, tmp_path):
    """Two gloo ranks, one clock running 10^6 times faster (30 s of checkpoint interval pass in 30 us): when rank 1
    is the fast one, only rank 0's clock counts, so no rank enters a checkpoint (and its collective) alone, which
    would hang the run; when rank 0 is, both ranks checkpoint at every log step together. The run stopped at step 5
    and resumed ends bit-identical to the uninterrupted one."""
    import rank_workers
    from conftest import spawn

    # 64 images, batch 16: 4 steps an epoch, 8 in all
    straight = _two_rank_config(fmnist_dir, tmp_path / "straight")
    spawn(rank_workers.skewed_clock_pretrain, straight, 1, str(tmp_path / "straight"))
    saved = [torch.load(tmp_path / "straight" / f"saved{r}.pt") for r in (0, 1)]
    assert saved[0] == saved[1] == [8], saved  # rank 0's clock: no checkpoint was due before the end

    stopped = _two_rank_config(fmnist_dir, tmp_path / "resumed", max_steps=5)
    spawn(rank_workers.skewed_clock_pretrain, stopped, 0, str(tmp_path / "resumed"))
    stopped.pop("max_steps")
    spawn(rank_workers.skewed_clock_pretrain, stopped, 0, str(tmp_path / "resumed"))
    saved = [torch.load(tmp_path / "resumed" / f"saved{r}.pt") for r in (0, 1)]
    assert saved[0] == saved[1] == [1, 2, 3, 4, 5, 6, 7, 8], saved  # due at every log step, on both ranks

    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pth")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pth")
    assert a["step"] == b["step"] == 8
    for k, v in a["model"].items():
        assert torch.equal(b["model"][k], v), k
    events = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    reasons = {e["step"]: e["reason"] for e in events if e.get("event") == "checkpoint"}
    assert reasons[4] == reasons[8] == "epoch" and reasons[3] == "periodic" and reasons[5] == "max_steps", reasons


# ---- the library equals the CLI ------------------------------------------------------------------------------------
def test_pretrain_from_python_fits_the_data_as_the_cli_does(tmp_path, capsys, monkeypatch):
    """``barlowtwins.pretrain(PretrainConfig(dataset="images", data_dir=...))`` used to skip the CLI's data fit and
    run the ImageNet recipe (ResNet-50, 224 px, batch 2048) on a CPU. It plans the CLI's run now, says so, keeps
    the fields given, and ``fit=False`` runs the config as it is; the CLI fits once."""
    from conftest import make_image_folder

    from barlowtwins.cli import main
    from barlowtwins.training import autoconfig
    from barlowtwins.training import trainer as T
    from barlowtwins.training.config import PretrainConfig

    data = make_image_folder(tmp_path / "imgs", per_class=8, size=24, splits=("train",)) / "train"  # 16 images
    out = tmp_path / "r"
    summary = pretrain(PretrainConfig(dataset="images", data_dir=str(data), out=str(out), device="cpu", epochs=1,
                                      max_steps=1, workers=0, progress=False, seed=3))
    said = capsys.readouterr().out
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert (saved["backbone"], saved["width"], saved["image_size"], saved["batch_size"]) == ("resnet18", 16, 24, 16)
    assert saved["seed"] == 3 and saved["eta"] == 0.02  # the field given kept, the CPU recipe for the rest
    assert summary["note"].startswith("no preset, training on the CPU: the CPU recipe for 16 images"), summary
    assert said.splitlines()[0] == summary["note"]
    # the CLI makes the same plan, and fits once
    calls = []

    def counted(cfg, explicit=None):
        calls.append(cfg)
        return real(cfg, explicit)

    real = autoconfig.fit_to_data
    monkeypatch.setattr(autoconfig, "fit_to_data", counted)
    monkeypatch.setattr(T, "fit_to_data", counted)
    assert main(["pretrain", "--dataset", "images", "--data-dir", str(data), "--out", str(tmp_path / "c"),
                 "--device", "cpu", "--epochs", "1", "--max-steps", "1", "--workers", "0", "--no-progress",
                 "--seed", "3"]) == 0
    assert len(calls) == 1
    cli = yaml.safe_load((tmp_path / "c" / "config.yaml").read_text())
    assert {k: v for k, v in cli.items() if k != "out"} == {k: v for k, v in saved.items() if k != "out"}
    # fit=False: the config as given (the trainer is not run here: it would be the ImageNet recipe)
    seen = {}

    class Stop(Exception):
        pass

    def trainer(cfg, info, lock):
        seen["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(T, "Trainer", trainer)
    with pytest.raises(Stop):
        pretrain(PretrainConfig(dataset="images", data_dir=str(data), out=str(tmp_path / "n"), device="cpu"),
                 fit=False)
    assert (seen["cfg"].backbone, seen["cfg"].image_size, seen["cfg"].batch_size) == ("resnet50", 224, 2048)


def test_max_steps_from_python_says_once_that_the_rate_never_decayed(fmnist_dir, tmp_path, capsys):
    """``max_steps`` cuts the schedule where the learning rate is still high; from Python nothing said so."""
    from barlowtwins.cli import main

    summary = pretrain(tiny_config(fmnist_dir, tmp_path / "a", max_steps=3))
    said = capsys.readouterr().out
    assert summary["stopped_by"] == "max_steps"
    assert said.count("reached --max-steps 3 at step 3 of the 8-step schedule") == 1, said
    assert "has not decayed" in said
    assert main(_cli_args(fmnist_dir, tmp_path / "b", "--max-steps", "3")) == 0
    assert capsys.readouterr().out.count("reached --max-steps 3") == 1  # the CLI says it once too
    pretrain(tiny_config(fmnist_dir, tmp_path / "c"))
    assert "max-steps" not in capsys.readouterr().out  # a finished run: nothing to say


def test_a_run_resumes_from_its_config_yaml_with_the_derived_values_in_it(fmnist_dir, tmp_path, capsys):
    """config.yaml holds the augmentation values the run derived (not null); given back as --config it resumes
    the run (the same views: nothing in it changed)."""
    from barlowtwins.cli import main

    out = tmp_path / "r"
    assert main(_cli_args(fmnist_dir, out, "--max-steps", "3")) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["blur_p"] == [0.0, 0.0] and saved["saturation"] == 0.0 and saved["crop_scale"] == [0.2, 1.0]
    capsys.readouterr()
    assert main(["pretrain", "--config", str(out / "config.yaml"), "--max-steps", "5"]) == 0
    said = capsys.readouterr().out
    assert "resumed from step 3 of 8" in said and "reached --max-steps 5 at step 5" in said, said
    straight = tmp_path / "s"
    assert main(_cli_args(fmnist_dir, straight, "--max-steps", "5")) == 0
    a, b = load_checkpoint(straight / "checkpoint.pth"), load_checkpoint(out / "checkpoint.pth")
    for k in a["model"]:
        torch.testing.assert_close(b["model"][k], a["model"][k], rtol=1e-5, atol=1e-6, msg=k)
