"""`build_run`: every part of a pretraining run made and checked before any work, a refused run leaving no run
folder, a resume picking up the newest checkpoint's step and weights; and `Plan`, the schedule a run follows."""

import pytest
import torch
from conftest import tiny_config

from barlowtwins.errors import ConfigError, DataError
from barlowtwins.models.barlow_twins import BarlowTwins
from barlowtwins.runtime import distributed as D
from barlowtwins.training.budget import MAX_WARMUP_SHARE
from barlowtwins.training.run import LOG_POINTS, Plan, build_pretrain_model, build_run
from barlowtwins.training.trainer import RunFolderLock, pretrain
from barlowtwins.weights.run_files import load_checkpoint

INFO = D.DistInfo()


def built(cfg, info=INFO):
    """``build_run`` as the trainer calls it (inside the run folder's lock); the parts, their resources released."""
    with RunFolderLock(cfg.out, info) as lock:
        run = build_run(cfg, info, lock)
        assert lock.held
        run.pipeline.close()
        run.log.close()
    return run


def test_every_part_of_a_new_run_exists(fmnist_dir, tmp_path):
    cfg = tiny_config(fmnist_dir, tmp_path / "r", knn_every=1, knn_max_samples=10)
    run = built(cfg)
    assert run.out == tmp_path / "r" and run.out.is_dir() and run.world == 1 and run.device.type == "cpu"
    assert run.steps_per_epoch == 4 and len(run.dataset) == 64  # 64 images in batches of 16
    assert run.pipeline.kind == "memory" and len(run.pipeline) == 4 and run.data_fingerprint
    assert isinstance(run.model, BarlowTwins) and run.called is not None
    model_params = {id(p) for p in run.model.parameters()}
    assert {id(p) for g in run.optimizer.param_groups for p in g["params"]} == model_params
    assert run.plan.total_steps == 8 and run.plan.schedule.warmup_steps == 2  # 2 epochs; warm-up 0.5 epoch
    assert run.log.log_every == run.plan.log_every == 1  # 8 steps: fewer than LOG_POINTS, so every step
    assert run.knn is not None and len(run.knn.train_set) == 10
    assert run.store is not None and run.budget is not None
    assert (run.start_step, run.saved_step, run.resumed_from, run.resume_changes) == (0, None, None, [])


def test_the_initial_weights_are_the_seeds(fmnist_dir, tmp_path):
    a = built(tiny_config(fmnist_dir, tmp_path / "a")).model.state_dict()
    b = built(tiny_config(fmnist_dir, tmp_path / "b")).model.state_dict()
    torch.manual_seed(7)
    ref = build_pretrain_model(tiny_config(fmnist_dir, tmp_path / "c")).state_dict()
    for k, v in a.items():
        assert torch.equal(v, b[k]) and torch.equal(v, ref[k]), k


@pytest.mark.parametrize("case", ["knn data", "process layout"])
def test_a_refused_run_builds_nothing(fmnist_dir, tmp_path, case):
    out = tmp_path / "r"
    if case == "knn data":  # checked before the run folder is made
        cfg, info, error = tiny_config(fmnist_dir, out, knn_every=1, knn_dataset="folder",
                                       knn_data_dir=str(tmp_path / "missing")), INFO, DataError
    else:  # a global batch of 16 cannot be split over 3 processes
        cfg, info, error = tiny_config(fmnist_dir, out), D.DistInfo(world_size=3), ConfigError
    with pytest.raises(error):
        built(cfg, info)
    assert not out.exists()


def test_a_data_set_smaller_than_one_batch_leaves_no_run_folder(fmnist_dir, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(DataError, match="the data set has 64 images, fewer than one batch of 128"):
        built(tiny_config(fmnist_dir, out, batch_size=128))
    assert not out.exists()  # made for the lock, then removed with it: nothing else was written


def test_a_resume_starts_at_the_checkpoints_step_with_its_weights(fmnist_dir, tmp_path):
    cfg = tiny_config(fmnist_dir, tmp_path / "r", max_steps=3)
    assert pretrain(cfg, fit=False)["step"] == 3
    run = built(cfg)
    assert (run.start_step, run.saved_step) == (3, 3)
    assert run.resumed_from == tmp_path / "r" / "checkpoint.pth" and run.resume_changes == []
    saved = load_checkpoint(run.resumed_from)["model"]
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, saved[k]), k
    longer = built(tiny_config(fmnist_dir, tmp_path / "r", max_steps=3, epochs=3))
    assert longer.start_step == 3 and longer.plan.total_steps == 12 and longer.resume_changes == ["--epochs 2 -> 3"]


def test_a_plan_logs_at_least_log_points_times_and_follows_its_warm_up():
    plan = Plan(total_steps=100, warmup_steps=10, final_lr_ratio=0.001, log_every_asked=50)
    assert plan.log_every == 100 // LOG_POINTS  # a short schedule logs more often than asked
    assert plan.schedule.total_steps == 100 and plan.schedule.warmup_steps == 10
    assert plan.schedule(0) == 0 and plan.schedule(10) == pytest.approx(1.0)
    assert plan.schedule(99) == pytest.approx(0.001, abs=1e-3)
    assert Plan(100_000, 10, 0.001, 50).log_every == 50  # long enough: as asked
    assert Plan(5, 10, 0.001, 50).schedule.warmup_steps == 5  # a warm-up longer than the run is the run


def test_replan_under_a_time_budget_shortens_the_warm_up_of_a_short_schedule():
    plan = Plan(total_steps=1000, warmup_steps=100, final_lr_ratio=0.001, log_every_asked=20)
    plan.replan(200, budgeted=True)
    assert plan.total_steps == 200 and plan.budgeted
    assert plan.schedule.total_steps == 200 and plan.schedule.warmup_steps == round(MAX_WARMUP_SHARE * 200)
    assert plan.log_every == 200 // LOG_POINTS
    plan.replan(5000, budgeted=True)
    assert plan.schedule.warmup_steps == 100 and plan.log_every == 20  # the configured warm-up fits: kept
    plan.replan(200, budgeted=False)
    assert plan.schedule.warmup_steps == 100  # without a budget the configured warm-up stays
