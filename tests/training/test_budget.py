"""A time budget as a step count: first estimate, corrections, a warm-up inside the budget, and the same schedule
across any number of resumes (a fake clock: no timing in tests)."""

import json

import pytest

from barlowtwins.training import budget as B
from barlowtwins.training.budget import TimeBudget, warmup_steps
from barlowtwins.weights.run_files import load_checkpoint


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(B.time, "time", c)
    return c


def run_session(budget: TimeBudget, clock: Clock, start: int, stop: int, seconds_per_step: float) -> list[int]:
    """Steps start+1..stop at a constant speed; returns the totals estimated."""
    totals = []
    for step in range(start + 1, stop + 1):
        clock.now += seconds_per_step
        if budget.active and budget.observe(step):
            totals.append(budget.total_steps(step))
    return totals


def test_first_estimate_and_corrections(clock):
    b = TimeBudget(minutes=10, start_step=0, upper_bound=10_000)  # 600 s at 1 s/step: 600 steps
    totals = run_session(b, clock, 0, 600, 1.0)
    assert totals[0] == 600  # after 3 warm + 12 measured steps
    assert len(totals) == 6 and all(t == 600 for t in totals)  # corrections at 10%, 25%, 50%, 75%, 90%
    assert not b.active  # the length is fixed: no estimate pending


def test_upper_bound_and_no_budget(clock):
    b = TimeBudget(minutes=10, start_step=0, upper_bound=100)
    assert run_session(b, clock, 0, 20, 1.0)[0] == 100
    assert not TimeBudget(minutes=0, start_step=0, upper_bound=100).active
    assert TimeBudget(minutes=None, start_step=0, upper_bound=100).state() is None


def test_the_schedule_survives_any_number_of_resumes(clock):
    """The issue's case: stop at 20, 25, 30 and resume each time. The total must neither vanish nor jump back to
    the upper bound, and the time spent before a stop counts against the budget."""
    straight = TimeBudget(minutes=2, start_step=0, upper_bound=4000)  # 120 s at 1 s/step
    straight_totals = run_session(straight, clock, 0, 120, 1.0)
    assert straight_totals[0] == 120

    state, step = None, 0
    totals = []
    for stop in (20, 25, 30, 120):
        b = TimeBudget(minutes=2, start_step=step, upper_bound=4000, state=state)
        if b.estimated_total is not None:
            totals.append(b.estimated_total)  # what the resumed schedule starts from
        totals += run_session(b, clock, step, stop, 1.0)
        state, step = b.state(), stop
        assert state["total_steps"] is not None or stop < 15
    assert totals and all(t == 120 for t in totals), totals
    assert state["spent_seconds"] == pytest.approx(120)


def test_a_resume_without_an_estimate_yet_keeps_the_time_spent(clock):
    b = TimeBudget(minutes=1, start_step=0, upper_bound=4000)
    run_session(b, clock, 0, 10, 1.0)  # stopped before the first estimate
    resumed = TimeBudget(minutes=1, start_step=10, upper_bound=4000, state=b.state())
    totals = run_session(resumed, clock, 10, 60, 1.0)
    assert totals[0] == 60  # 10 s already spent: 50 more steps, not 60 more


def test_warmup_is_part_of_the_budget():
    assert warmup_steps(200, 116, budgeted=False) == 200
    assert warmup_steps(200, 116, budgeted=True) == round(B.MAX_WARMUP_SHARE * 116)
    assert warmup_steps(10, 1000, budgeted=True) == 10  # a short warm-up is kept as configured
    from barlowtwins.training.optim import CosineSchedule

    s = CosineSchedule(116, warmup_steps(200, 116, budgeted=True), 0.001)
    assert s(115) < 0.01  # the budgeted schedule decays to its end (it never did with 200 warm-up steps)


def test_budget_state_is_kept_in_every_checkpoint_across_resumes(fmnist_dir, tmp_path):
    """On the real trainer: three stops and resumes of a budget run keep a budget total in every checkpoint."""
    from conftest import tiny_config

    from barlowtwins.training.trainer import pretrain

    out = tmp_path / "r"
    seen = []
    for stop in (16, 18, 20):
        pretrain(tiny_config(fmnist_dir, out, epochs=500, time_budget_minutes=30, max_steps=stop, log_every=4,
                             warmup_epochs=50))
        ckpt = load_checkpoint(out / "checkpoint.pth")
        assert ckpt["step"] == stop and ckpt["budget"]["total_steps"] is not None
        seen.append(ckpt["budget"])
    assert seen[0]["spent_seconds"] < seen[1]["spent_seconds"] < seen[2]["spent_seconds"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    budget_events = [r for r in records if r.get("event") == "budget"]
    assert budget_events[0]["warmup_steps"] <= B.MAX_WARMUP_SHARE * budget_events[0]["total_steps"] + 1


@pytest.mark.parametrize("state", [
    {"total_steps": "12"}, {"total_steps": -5}, {"total_steps": 10**30}, {"origin": 1.5}, {"origin": True},
    {"pending": 3}, {"pending": ["x"]}, {"pending": [0.1] * 1000}, {"pending": [7.0]},
    {"spent_seconds": float("nan")}, {"spent_seconds": "1"}, {"spent_seconds": -1.0}, [1, 2],
])
def test_a_damaged_budget_record_is_one_line(state):
    from barlowtwins.errors import CheckpointError

    with pytest.raises(CheckpointError, match="time-budget record is damaged") as e:
        TimeBudget(5, 0, 1000, state)
    assert "\n" not in str(e.value)


def test_a_valid_budget_record_is_read_back():
    b = TimeBudget(5, 10, 1000, {"origin": 2, "total_steps": 500, "pending": [0.25, 0.5], "spent_seconds": 30.0})
    assert (b.origin, b.estimated_total, b.pending, b.spent_before) == (2, 500, [0.25, 0.5], 30.0)
