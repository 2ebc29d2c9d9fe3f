"""A pretraining run built from its config: every part made and checked before any work starts.

    >>> run = build_run(cfg, D.DistInfo())     # checks, run folder, resume, data, network, optimiser, schedule
    >>> run.model, run.called, run.pipeline, run.optimizer, run.plan.schedule, run.store, run.budget, run.log
    >>> run.start_step                          # 0, or the step of the checkpoint it resumed

`build_run` works in the order that keeps a refused run cheap and its folder untouched: the settings that depend
on the process layout, the run folder and its lock, the newest checkpoint and whether this config may resume
it (before the data set is scanned), the online-kNN data; only then the network, the data set (fingerprinted)
and its data path, the optimiser, the resumed state (`resume`), the time budget, the schedule (`Plan`), the
placement on the device (`place_model`) and the monitor. Every part exists when it returns; the loop that uses
them is `barlowtwins.training.trainer.Trainer.run`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from barlowtwins.data.datasets import build_dataset, data_options
from barlowtwins.data.fingerprint import compare, fingerprint
from barlowtwins.data.pipeline import pipeline_from_config
from barlowtwins.errors import CheckpointError, DataError, field_error
from barlowtwins.models.barlow_twins import BarlowTwins, build_model
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.hardware import Precision, choose_precision, select_device
from barlowtwins.runtime.log import get_logger
from barlowtwins.runtime.placement import per_rank_batch, place_model
from barlowtwins.training.budget import TimeBudget, warmup_steps
from barlowtwins.training.checkpoints import CheckpointStore
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.metrics import MetricsLog
from barlowtwins.training.monitor import RunMonitor
from barlowtwins.training.optim import CosineSchedule, build_optimizer, move_state_to_params
from barlowtwins.training.preflight import check_knn_data, check_output_folder, check_resume, schedule_changes
from barlowtwins.transforms.progressive import check_progressive_start

log = get_logger(__name__)

LOG_POINTS = 30  # log lines at least, over a whole schedule


def build_pretrain_model(cfg: PretrainConfig) -> BarlowTwins:
    """The network and loss a config describes (on the CPU, before any wrapping): `build_model` of its fields, its
    loss global over the ranks (``distributed=True``: every rank computes it at every step, as the paper's)."""
    return build_model(cfg.backbone, cfg.projector, stem=cfg.stem, width=cfg.width,
                       zero_init_residual=cfg.zero_init_residual, projector_bn=cfg.projector_bn, lambd=cfg.lambd,
                       terms=cfg.loss_terms, distributed=True)


@dataclass
class Plan:
    """The schedule's length and what follows from it: the cosine (`CosineSchedule`) and the log interval. A
    time budget re-plans it once the throughput is measured (`replan`), at a step every rank agrees on."""

    total_steps: int
    warmup_steps: int  # the configured warm-up (a budget shortens it for a short schedule)
    final_lr_ratio: float
    log_every_asked: int
    budgeted: bool = False
    schedule: CosineSchedule = field(init=False)
    log_every: int = field(init=False)

    def __post_init__(self) -> None:
        self.replan(self.total_steps, self.budgeted)

    def replan(self, total_steps: int, budgeted: bool) -> None:
        self.total_steps, self.budgeted = int(total_steps), budgeted
        # A short run logs more often than --log-every, so that its curves have at least LOG_POINTS points (the
        # interval is a function of the schedule's length, which every rank knows: their checks stay aligned).
        self.log_every = max(1, min(self.log_every_asked, self.total_steps // LOG_POINTS))
        self.schedule = CosineSchedule(self.total_steps, warmup_steps(self.warmup_steps, self.total_steps, budgeted),
                                       self.final_lr_ratio)


@dataclass
class Run:
    """The parts of one pretraining run (see the module docstring). ``model`` is the plain network (its state
    dict is what a checkpoint holds), ``called`` what a step calls (DDP, compile around it)."""

    cfg: PretrainConfig
    info: D.DistInfo
    device: torch.device
    precision: Precision  # what autocast does (its dtype: amp_dtype) and why, said on the run's first line
    amp_dtype: torch.dtype | None
    out: Path
    store: CheckpointStore
    knn: Any  # the online kNN monitor (None without --knn-every)
    dataset: Any
    data_fingerprint: dict
    pipeline: Any
    steps_per_epoch: int
    model: BarlowTwins
    called: nn.Module
    channels_last: bool
    optimizer: torch.optim.Optimizer
    budget: TimeBudget
    plan: Plan
    log: RunMonitor
    start_step: int = 0
    saved_step: int | None = None  # the step of the newest checkpoint on disk
    resumed_from: Path | None = None
    resume_changes: list[str] = field(default_factory=list)  # what a rerun changed in the schedule
    resumed_precision: str | None = None  # the precision the resumed checkpoint was trained in (None: not recorded)

    @property
    def world(self) -> int:
        return self.info.world_size


@dataclass
class _Resumed:
    checkpoint: dict
    path: Path
    changes: list[str]


def read_resume(store: CheckpointStore, cfg: PretrainConfig, info: D.DistInfo) -> _Resumed | None:
    """The newest good checkpoint of the run folder, checked against this config (None for a new run)."""
    found = store.load_latest()
    if found is None:
        return None
    ckpt, path, problems = found
    if problems and info.is_main:
        log.warning(f"warning: {problems[0]}; resuming from the previous checkpoint {path.name}")
    check_resume(ckpt["config"], cfg, path)
    return _Resumed(ckpt, path, schedule_changes(ckpt["config"], cfg))


def check_same_data(saved: dict | None, now: dict, cfg: PretrainConfig, info: D.DistInfo) -> None:
    """A resume indexes samples by position: on a changed data set it would silently train on other images
    (and another schedule) than the interrupted run. Refused in one line unless accepted knowingly."""
    change = compare(saved, now)
    if change is None:
        return
    if not cfg.accept_data_change:
        raise field_error(lambda n: f"{change}; resuming would train on other images than the interrupted run: "
                                    f"restore the data set, choose a new {n('out')}, or pass "
                                    f"{n('accept_data_change')} to resume anyway", DataError)
    if info.is_main:
        log.warning(f"warning: {change}; resuming anyway (--accept-data-change)")


def resume(model: nn.Module, optimizer: torch.optim.Optimizer, resumed: _Resumed, cfg: PretrainConfig
           ) -> tuple[int, dict | None]:
    """Load a checkpoint's weights and optimiser state: ``(its step, its time-budget state or None)``."""
    ckpt = resumed.checkpoint
    try:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        why = str(e).splitlines()[0]
        raise field_error(lambda n: f"{resumed.path} does not match this network ({why}); choose "
                                    f"a new {n('out')}", CheckpointError) from None
    step = int(ckpt["step"])
    if not cfg.time_budget_minutes:
        return step, None
    if isinstance(ckpt.get("budget"), dict):
        return step, ckpt["budget"]
    if ckpt.get("budget_total_steps"):  # written by earlier versions: the total only
        return step, {"total_steps": ckpt["budget_total_steps"], "pending": []}
    return step, None


def build_run(cfg: PretrainConfig, info: D.DistInfo, lock) -> Run:
    """Every part of the run ``cfg`` describes, in the order of the module docstring. ``lock``: the run folder's
    `RunFolderLock`, taken before an existing folder is read and, for a new one, once every check has passed."""
    device = select_device(cfg.device, info.local_rank)
    precision = choose_precision(cfg.precision, device)  # a bf16 the device cannot do natively: one line, here
    out = Path(cfg.out)
    store = CheckpointStore(out, cfg.keep_checkpoints)
    # Up front: what depends on the process layout, the run folder, resume compatibility, the online-kNN data.
    per_rank_batch(cfg.batch_size, info.world_size)
    check_progressive_start(cfg.progressive_start, cfg.image_size)  # before the run folder is made
    check_output_folder(out)
    if out.is_dir():  # nobody else may be writing it: checked before it is read
        lock.take()
    resumed = read_resume(store, cfg, info)
    knn = check_knn_data(cfg)
    lock.take()  # a new folder is created only now, every up-front check passed

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_pretrain_model(cfg)  # checks backbone, stem, width, projector spec
    dataset = build_dataset(cfg.dataset, cfg.data_dir, cfg.split, cfg.download, **data_options(cfg, cfg.dataset))
    data_fingerprint = fingerprint(dataset)
    if resumed is not None:
        check_same_data(resumed.checkpoint.get("data_fingerprint"), data_fingerprint, cfg, info)
    pipeline = pipeline_from_config(cfg, dataset, info.rank, info.world_size, device)
    steps_per_epoch = len(pipeline)
    if steps_per_epoch == 0:
        raise field_error(lambda n: f"the data set has {len(dataset)} images, fewer than one batch of "
                                    f"{cfg.batch_size}; lower {n('batch_size')} or add images", DataError)
    optimizer = build_optimizer(cfg.optimizer, model, cfg.lr_weights, cfg.lr_biases, cfg.weight_decay,
                                cfg.momentum, cfg.eta)
    start_step, budget_state = resume(model, optimizer, resumed, cfg) if resumed is not None else (0, None)
    total_steps = cfg.epochs * steps_per_epoch
    try:
        budget = TimeBudget(cfg.time_budget_minutes, start_step, total_steps, budget_state)
    except CheckpointError as e:  # only a resumed budget state can be wrong
        where, why = (resumed.path if resumed is not None else out), str(e)
        raise field_error(lambda n: f"{where}: {why}; resume from an earlier checkpoint or choose a new {n('out')}",
                          CheckpointError) from None
    if budget.estimated_total is not None:  # a resumed budget run keeps the length it chose
        total_steps = budget.estimated_total
    plan = Plan(total_steps, round(cfg.warmup_epochs * steps_per_epoch), cfg.final_lr_ratio, cfg.log_every,
                budgeted=budget.estimated_total is not None)

    placed = place_model(model, device, world=info.world_size, sync_bn=cfg.sync_bn, channels_last=cfg.channels_last,
                         compile=cfg.compile, grad_compression=cfg.grad_compression,
                         gradient_as_bucket_view=True, static_graph=True, broadcast_buffers=False)
    move_state_to_params(optimizer)  # the optimiser state follows the model to its device and dtype
    log = RunMonitor.for_run(cfg, MetricsLog(out / "metrics.jsonl" if info.is_main else None), placed.raw,
                             out if info.is_main else None)
    log.log_every = plan.log_every
    return Run(cfg=cfg, info=info, device=device, precision=precision, amp_dtype=precision.dtype, out=out,
               store=store, knn=knn,
               dataset=dataset, data_fingerprint=data_fingerprint, pipeline=pipeline, steps_per_epoch=steps_per_epoch,
               model=cast(BarlowTwins, placed.raw), called=placed.called, channels_last=placed.channels_last,
               optimizer=optimizer,
               budget=budget, plan=plan, log=log, start_step=start_step,
               saved_step=start_step if resumed is not None else None,
               resumed_from=resumed.path if resumed is not None else None,
               resume_changes=resumed.changes if resumed is not None else [],
               resumed_precision=resumed.checkpoint.get("precision") if resumed is not None else None)


__all__ = ["LOG_POINTS", "Plan", "Run", "build_pretrain_model", "build_run", "check_same_data", "read_resume",
           "resume"]
