"""Progress output: the bar's total is the run's real end; without a terminal, plain lines and no carriage returns."""

import io
import time

import pytest
from conftest import tiny_config

from barlowtwins.training.progress import Progress
from barlowtwins.training.trainer import pretrain


def test_total_is_capped_by_max_steps_and_follows_a_budget():
    p = Progress(18000, 0, max_steps=30, tty=False, stream=io.StringIO(), interval=0)
    assert p.total == 30
    p.total = 20  # a time budget fixed a shorter schedule
    assert p.total == 20
    p.total = 500
    assert p.total == 30


def test_plain_lines_every_update_with_interval_zero():
    out = io.StringIO()
    p = Progress(18000, 0, max_steps=30, tty=False, stream=out, interval=0)
    for step in range(30):
        p.update(1)
        if step % 10 == 9:
            p.set_postfix(loss="812.3", img_s="431", epoch="0.27")
    p.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 30  # one per step; close adds none for an already printed step
    assert lines[0].startswith("pretrain step 1/30 (3.3%)")
    assert lines[-1].startswith("pretrain step 30/30 (100.0%) loss 812.3 img/s 431 epoch 0.27")
    assert "eta" in lines[-1]


def test_long_interval_prints_first_and_last_only():
    out = io.StringIO()
    p = Progress(100, 40, tty=False, stream=out, interval=3600)
    for _ in range(60):
        p.update(1)
    p.close()
    lines = out.getvalue().splitlines()
    assert [ln.split(" (")[0] for ln in lines] == ["pretrain step 41/100", "pretrain step 100/100"]


def test_time_limit_and_budget_are_shown_and_cap_eta():
    out = io.StringIO()
    p = Progress(10**9, 0, time_limit_minutes=2, tty=False, stream=out, interval=0)
    p.update(1)
    assert p.eta_seconds() is None  # the first step's start-up costs are not a rate
    time.sleep(0.01)
    p.update(1)
    assert "time limit 0:02:00" in out.getvalue().splitlines()[-1]
    assert 0 < p.eta_seconds() <= 120
    p = Progress(10**9, 0, budget_minutes=1, tty=False, stream=out, interval=0)
    p.update(1)
    time.sleep(0.01)
    p.update(1)
    assert out.getvalue().splitlines()[-1].endswith("budget 0:01:00") and p.eta_seconds() <= 60


def test_eta_leaves_out_the_first_step():
    p = Progress(100, 0, tty=False, stream=io.StringIO(), interval=0)
    p.started -= 1000  # a slow first step (start-up) ...
    p.update(1)
    p._rate_mark = (1, time.time() - 1.0)  # ... then 9 steps in one second
    p.n = 10
    assert p.eta_seconds() == pytest.approx(10.0, rel=0.05)  # 90 steps at 9 steps/s, not at the first step's pace


def test_terminal_bar_total_is_the_real_end():
    out = io.StringIO()
    p = Progress(18000, 0, max_steps=30, tty=True, stream=out)
    assert p._bar.total == 30
    p.total = 12
    assert p._bar.total == 12
    p.update(12)
    p.close()
    assert "12/12" in out.getvalue()


def test_a_run_without_terminal_prints_plain_progress_lines(fmnist_dir, tmp_path, capsys):
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", epochs=50, max_steps=5, progress=True, progress_seconds=0))
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("pretrain step")]
    assert "\r" not in out
    assert [ln.split(" (")[0] for ln in lines] == [f"pretrain step {i}/5" for i in range(1, 6)]
    assert "loss" in lines[-1] and "img/s" in lines[-1]
