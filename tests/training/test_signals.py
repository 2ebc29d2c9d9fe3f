"""Stop signals: handled from the first line, during set-up, after the run, and a distinct exit status."""

import os
import signal
import subprocess
import sys
import time

import pytest

from barlowtwins.training import signals
from barlowtwins.training.signals import GRACEFUL_STOP_EXIT, StopSignal, stop_reason

TINY = ["--dataset", "fashion-mnist", "--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem",
        "small", "--projector", "32-32", "--batch-size", "16", "--no-progress", "--log-every", "1"]


def test_handlers_remember_the_first_signal_and_restore():
    s = StopSignal()
    before = signal.getsignal(signal.SIGUSR1)
    assert s.install() and not s.install()  # idempotent
    os.kill(os.getpid(), signal.SIGUSR1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert s.received == signal.SIGUSR1
    s.restore()
    assert signal.getsignal(signal.SIGUSR1) == before and s.received is None


def test_second_ctrl_c_interrupts_at_once():
    s = StopSignal()
    s.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert s.received == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        s.restore()


def test_stop_reason_order():
    s = StopSignal()
    assert stop_reason(5, max_steps=None, time_limit_minutes=None, start_time=time.time(), stop=s) == "finished"
    assert stop_reason(5, max_steps=5, time_limit_minutes=None, start_time=time.time(), stop=s) == "max_steps"
    assert stop_reason(5, max_steps=9, time_limit_minutes=1, start_time=time.time() - 61, stop=s) == "time_limit"
    s.received = signal.SIGTERM
    assert stop_reason(5, max_steps=5, time_limit_minutes=1, start_time=time.time() - 61, stop=s) == "signal"


def fake_scontrol(tmp_path, monkeypatch=None):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/scontrol.log\n")
    (bin_dir / "scontrol").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "777"}
    if monkeypatch is not None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)
    return env


def test_a_stop_during_set_up_exits_cleanly_and_requeues(fmnist_dir, tmp_path, monkeypatch):
    """SIGTERM while the data set is being read (a long folder scan): no step, no traceback, requeued, exit 75."""
    from barlowtwins.cli import main
    from barlowtwins.training import run as R

    fake_scontrol(tmp_path, monkeypatch)
    real = R.build_dataset

    def slow_scan(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives in the middle of set-up
        return real(*args, **kwargs)

    monkeypatch.setattr(R, "build_dataset", slow_scan)
    code = main(["pretrain", *TINY, "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "r")])
    assert code == GRACEFUL_STOP_EXIT
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "777"]
    assert not (tmp_path / "r" / "checkpoint.pth").exists()  # nothing trained, nothing to save
    assert signals.STOP.received is None and not signals.STOP.installed  # main() left the process as it was


def test_a_signal_after_the_last_checkpoint_does_not_kill(fmnist_dir, tmp_path, monkeypatch):
    from barlowtwins.cli import main
    from barlowtwins.training import trainer as train

    real = train.write_run_backbone

    def export_then_signal(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGUSR1)  # SLURM's warning arrives just as the run ends

    monkeypatch.setattr(train, "write_run_backbone", export_then_signal)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    code = main(["pretrain", *TINY, "--data-dir", str(fmnist_dir), "--out", str(tmp_path / "r"), "--epochs", "1"])
    assert code == 0 and (tmp_path / "r" / "backbone.pth").is_file()


def test_graceful_stop_exit_status_from_the_command_line(fmnist_dir, tmp_path):
    """A real process: SIGTERM mid-training checkpoints and exits with the documented status, no traceback."""
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_JOB_ID", None)
    proc = subprocess.Popen([sys.executable, "-m", "barlowtwins", "pretrain", *TINY, "--data-dir", str(fmnist_dir),
                             "--epochs", "200", "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                          and (out / "metrics.jsonl").read_text().count('"loss"') >= 2):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == GRACEFUL_STOP_EXIT == 75, stderr
    assert "Traceback" not in stderr and "(signal)" in stdout
    assert (out / "checkpoint.pth").is_file()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_whole_process_group_stops_a_folder_run_cleanly(tmp_path, sig):
    """SLURM (scancel, time limit), systemd and Ctrl-C signal every process of the job, the loader workers of
    the cpu data path included: the workers leave the signal to the trainer, which checkpoints and exits 75
    with one notice, no traceback, and no worker left behind."""
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "imgs", per_class=16, size=48, splits=("train",))
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_JOB_ID", None)
    args = ["--dataset", "images", "--data-dir", str(folder), "--image-size", "32", "--backbone", "resnet18",
            "--width", "8", "--stem", "small", "--projector", "32-32", "--batch-size", "8", "--workers", "2",
            "--data-path", "cpu", "--no-progress", "--log-every", "1", "--epochs", "500", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-m", "barlowtwins", "pretrain", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists()
                                          and (out / "metrics.jsonl").read_text().count('"loss"') >= 2):
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(children) >= 3, children  # the trainer and its two loader workers, in one process group
    os.killpg(proc.pid, sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == GRACEFUL_STOP_EXIT == 75, stderr
    assert "Traceback" not in stderr and (out / "checkpoint.pth").is_file()
    assert stdout.count("stopping after this step") + stderr.count("stopping after this step") <= 1
    time.sleep(1)
    left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert not left, left


def test_decide_shares_the_stop_and_rank_zeros_checkpoint_question():
    from barlowtwins.training.signals import decide

    s = StopSignal()
    now = time.time()
    kw = dict(max_steps=None, time_limit_minutes=1, start_time=now, stop=s)
    assert decide(5, now=now, **kw) == decide(5, now=now, checkpoint_due=False, **kw)
    d = decide(5, now=now, checkpoint_due=True, **kw)
    assert (d.reason, d.checkpoint) == ("finished", True)  # one process: rank 0
    d = decide(5, now=now + 61, checkpoint_due=False, **kw)  # the caller's clock decides the time limit
    assert (d.reason, d.checkpoint) == ("time_limit", False)
    s.received = 15
    assert decide(5, now=now + 61, **kw).reason == "signal"
    assert decide(5, now=now, write_failed=True, **kw).reason == "write_error"
