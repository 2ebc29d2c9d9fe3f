"""Barlow Twins pretraining: one code path for one CPU, one GPU, and torchrun/SLURM over many GPUs.

`pretrain(cfg)` does everything `barlowtwins pretrain` does: builds data, network and LARS from the config,
resumes from ``<out>/checkpoint.pth`` when it exists, trains with the paper's per-step schedule, writes
metrics as JSON lines, checkpoints atomically (every ``checkpoint_minutes``, every epoch, and on a stop
signal), and at the end exports ``backbone.pth``: a plain torchvision state dict.

Under torchrun, ``batch_size`` is global: every rank takes ``batch_size / world_size`` samples, the loss
standardises and correlates over the global batch, BN layers are synchronised, and only rank 0 writes.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import torch
from torch import nn

from . import distributed as D
from .checkpoint import BACKBONE_NAME, CHECKPOINT_NAME, FORMAT, export_backbone, load_checkpoint, save_atomic
from .export import write_run_backbone
from .config import PretrainConfig, save_config
from .data import build_dataset
from .errors import CheckpointError, ConfigError, DataError
from .hardware import autocast, autocast_dtype, select_device
from .losses import TERMS, BarlowTwinsLoss
from .models import BarlowTwins, Projector, create_backbone
from .monitor import RunMonitor
from .optim import OPTIMIZERS, WarmupCosine, build_optimizer, set_learning_rates
from .pipeline import pipeline_from_config
from .progress import Progress

# Fields that must not change when a run is resumed: they define the network or the meaning of a step.
RESUME_KEYS = ("dataset", "split", "backbone", "stem", "width", "projector", "projector_bn", "batch_size", "image_size",
               "optimizer")


def build_pretrain_model(cfg: PretrainConfig) -> BarlowTwins:
    """The network and loss a config describes (on the CPU, before any wrapping)."""
    if cfg.loss_terms not in TERMS:
        raise ConfigError(f"unknown loss_terms '{cfg.loss_terms}'; choose one of {', '.join(TERMS)}")
    backbone = create_backbone(cfg.backbone, stem=cfg.stem, width=cfg.width,
                               zero_init_residual=cfg.zero_init_residual)
    projector = Projector(backbone.num_features, cfg.projector, batch_norm=cfg.projector_bn)
    loss = BarlowTwinsLoss(lambd=cfg.lambd, terms=cfg.loss_terms)
    return BarlowTwins(backbone, projector, loss)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The augmentation RNG of one step: a pure function of (seed, step), the same on every rank (each applies
    its slice of the global batch's draws), so a resumed run, or a run on another number of processes, draws
    exactly the views of the uninterrupted single-process run."""
    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + step)
    return g


class StopSignal:
    """Remembers SIGUSR1/SIGTERM (SLURM's warning before the time limit, or a pre-emption) and a first Ctrl-C:
    the run stops at the next step with a checkpoint. A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.received: int | None = None
        self._old = {}
        for sig in (getattr(signal, "SIGUSR1", None), signal.SIGTERM, signal.SIGINT):
            if sig is not None:
                try:
                    self._old[sig] = signal.signal(sig, self._handle)
                except ValueError:  # not in the main thread
                    pass

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            print("\nstopping after this step with a checkpoint (Ctrl-C again to abort)", flush=True)
        self.received = signum

    def restore(self):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _check_resume(saved: dict, cfg: PretrainConfig, path: Path) -> None:
    defaults = PretrainConfig()  # a field the saving version did not have yet held its default
    was = {k: saved.get(k, getattr(defaults, k)) for k in RESUME_KEYS}
    diffs = [f"{k}={was[k]!r} (now {getattr(cfg, k)!r})" for k in RESUME_KEYS if was[k] != getattr(cfg, k)]
    if diffs:
        raise ConfigError(f"run folder {path.parent} was started with {', '.join(diffs)}; "
                          "resume with the same settings or choose a new --out")


class MetricsLog:
    """JSON lines in ``<out>/metrics.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path | None):
        self.path = path

    def write(self, record: dict) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining as configured; return a summary dict (rank 0's view)."""
    info = D.init_distributed("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
    try:
        return Trainer(cfg, info).run()
    finally:
        D.shutdown()


class Trainer:
    """One pretraining run: everything is validated and built in ``__init__``, before any work starts."""

    def __init__(self, cfg: PretrainConfig, info: D.DistInfo):
        self.cfg, self.info, self.world = cfg, info, info.world_size
        self.device = select_device(cfg.device, info.local_rank)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.out = Path(cfg.out)
        self.ckpt_path = self.out / CHECKPOINT_NAME
        self._validate()
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_pretrain_model(cfg)  # checks backbone, stem, width, projector spec
        self.dataset = build_dataset(cfg.dataset, cfg.data_dir, cfg.split, cfg.download)
        self.pipeline = pipeline_from_config(cfg, self.dataset, info.rank, self.world, self.device)
        self.steps_per_epoch = len(self.pipeline)
        if self.steps_per_epoch == 0:
            raise DataError(f"the data set has {len(self.dataset)} images, fewer than one batch of {cfg.batch_size}; "
                            "lower --batch-size or add images")
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.warmup_steps = round(cfg.warmup_epochs * self.steps_per_epoch)
        self.optimizer = build_optimizer(cfg.optimizer, model, cfg.lr_weights, cfg.lr_biases, cfg.weight_decay,
                                         cfg.momentum, cfg.eta)
        self.step = 0
        budget_total = self._resume(model)
        self.schedule = WarmupCosine(self.total_steps, self.warmup_steps, cfg.final_lr_ratio)
        self.budget = _Budget(cfg.time_budget_minutes, self.step, self.total_steps)
        self.budget.fixed = budget_total is not None  # a resumed budget run keeps the length it chose
        self.raw_model, self.model = self._place(model)
        self.log = RunMonitor.for_run(cfg, MetricsLog(self.out / "metrics.jsonl" if info.is_main else None),
                                      self.raw_model, self.out if info.is_main else None)

    def _validate(self) -> None:
        cfg = self.cfg
        if cfg.batch_size < 2:
            raise ConfigError(f"--batch-size {cfg.batch_size} is too small: the loss standardises each embedding "
                              "dimension over the batch, which needs at least 2 samples")
        if cfg.batch_size % self.world:
            raise ConfigError(f"--batch-size {cfg.batch_size} is global and must divide evenly over "
                              f"{self.world} processes")
        if cfg.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {cfg.epochs}")
        if cfg.time_budget_minutes is not None and cfg.time_budget_minutes < 0:
            raise ConfigError(f"--time-budget-minutes must be positive (or 0 for no budget), got "
                              f"{cfg.time_budget_minutes}")
        if cfg.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{cfg.optimizer}'; choose one of {', '.join(OPTIMIZERS)}")
        if cfg.grad_compression not in ("none", "bf16"):
            raise ConfigError(f"unknown grad_compression '{cfg.grad_compression}'; choose none or bf16")
        if cfg.knn_every and (cfg.knn_dataset or cfg.dataset) == "images":
            raise ConfigError("--knn-every needs labelled data: give --knn-dataset (and --knn-data-dir), e.g. "
                              "--knn-dataset folder --knn-data-dir /data/imagenet")

    def _resume(self, model: nn.Module) -> int | None:
        """Load ``<out>/checkpoint.pth`` if there is one; return the step count a time budget had fixed."""
        if not self.ckpt_path.exists():
            return None
        ckpt = load_checkpoint(self.ckpt_path)
        if ckpt.get("format") != FORMAT or "model" not in ckpt or "optimizer" not in ckpt:
            raise CheckpointError(f"{self.ckpt_path} is not a barlowtwins training checkpoint; choose a new --out")
        _check_resume(ckpt.get("config", {}), self.cfg, self.ckpt_path)
        try:
            model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{self.ckpt_path} does not match this network ({str(e).splitlines()[0]}); "
                                  "choose a new --out") from None
        self.step = int(ckpt["step"])
        if self.cfg.time_budget_minutes and ckpt.get("budget_total_steps"):
            self.total_steps = int(ckpt["budget_total_steps"])
            return self.total_steps
        return None

    def _place(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """Device, memory format, SyncBN and DDP: returns (the plain model, the one to call)."""
        cfg = self.cfg
        model.to(self.device)
        if cfg.channels_last and self.device.type != "mps":
            model.to(memory_format=torch.channels_last)
        if self.world > 1 and cfg.sync_bn:
            model = D.convert_sync_batchnorm(model, self.device.type)
        raw = model
        if self.world > 1:
            model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                gradient_as_bucket_view=True, static_graph=True, broadcast_buffers=False)
            if cfg.grad_compression == "bf16":
                from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

                model.register_comm_hook(None, default_hooks.bf16_compress_hook)
        if cfg.compile:
            model = torch.compile(model)
        return raw, model

    # ---- one step ------------------------------------------------------------------------------------
    def _views(self, images) -> tuple[torch.Tensor, torch.Tensor]:
        x1, x2 = self.pipeline.views(images, self.step)  # per-sample parameters of (seed, step, position)
        dev = self.device
        if self.cfg.channels_last and dev.type != "mps":
            x1 = x1.contiguous(memory_format=torch.channels_last)
            x2 = x2.contiguous(memory_format=torch.channels_last)
        return x1, x2

    def train_step(self, images):
        """Schedule, views, forward, backward, LARS. No host sync."""
        set_learning_rates(self.optimizer, self.schedule(self.step) * self.cfg.batch_size / 256)
        x1, x2 = self._views(images)
        with autocast(self.device, self.amp_dtype):
            result = self.model(x1, x2)
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        self.optimizer.step()
        self.step += 1
        return result

    def checkpoint(self, reason: str) -> None:
        if self.info.is_main:
            save_atomic({"format": FORMAT, "version": 1, "step": self.step,
                         "epoch": self.step / self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                         "total_steps": self.total_steps,
                         "budget_total_steps": self.total_steps if self.budget.estimated_total else None,
                         "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                         "config": self.cfg.to_dict(), "world_size": self.world}, self.ckpt_path)
            write_run_backbone(self.raw_model.backbone, self.out, self.cfg.to_dict())  # always current
            self.log.write({"event": "checkpoint", "step": self.step, "reason": reason, "time": time.time()})

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self) -> dict:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.out / "config.yaml")
            self.log.write({"event": "start" if self.step == 0 else "resume", "step": self.step,
                            "world_size": self.world, "device": str(self.device),
                            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                            "images": len(self.dataset), "time": time.time()})
        stop = StopSignal()
        bar = None
        if info.is_main and cfg.progress:
            bar = Progress.for_run(cfg, self.total_steps, self.step)
        self.start_time = last_ckpt = time.time()
        window = _Window(self.device)
        reason = "finished"
        self.model.train()
        try:
            while self.step < self.total_steps and reason == "finished":
                epoch, first = divmod(self.step, self.steps_per_epoch)
                for images, _, _ in self.log.batches(self.pipeline.epoch(epoch, start=first)):
                    result = self.train_step(images)
                    window.add(result)
                    self.log.after_step(self.step, result)
                    if self.budget.active and self.budget.observe(self.step):
                        self._fix_budget(bar)
                    if bar is not None:
                        bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        record = window.flush(self)  # the only host syncs of the loop
                        if bar is not None:
                            bar.set_postfix(loss=f"{record['loss']:.1f}", img_s=f"{record['images_per_sec']:.0f}",
                                            epoch=f"{record['epoch']:.2f}")
                        if time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
                            self.checkpoint("periodic")
                            last_ckpt = time.time()
                    # Every step on one process; under DDP only at steps where every rank checks (a collective).
                    if self.world == 1 or self.step % cfg.log_every == 0 or \
                            (cfg.max_steps is not None and self.step >= cfg.max_steps):
                        reason = _should_stop(cfg, self.step, self.start_time, stop)
                    if self.step >= self.total_steps or reason != "finished":
                        break
                epoch_done = self.step % self.steps_per_epoch == 0
                if epoch_done or self.step >= self.total_steps or reason != "finished":
                    self.checkpoint("epoch" if reason == "finished" else reason)
                    last_ckpt = time.time()
                if cfg.knn_every and reason == "finished" and epoch_done and \
                        (self.step // self.steps_per_epoch) % cfg.knn_every == 0:
                    self._online_knn()
        finally:
            if bar is not None:
                bar.close()
            self.log.close()
            stop.restore()
        return self._finish(reason, stop)

    def _fix_budget(self, bar) -> None:
        """Set the schedule's length from the throughput measured so far, so that it ends inside the budget."""
        self.total_steps = self.budget.total_steps(self.step)
        self.schedule = WarmupCosine(self.total_steps, self.warmup_steps, self.cfg.final_lr_ratio)
        if bar is not None:
            bar.total = self.total_steps
            bar.refresh()
        self.log.write({"event": "budget", "total_steps": self.total_steps,
                        "epochs": self.total_steps / self.steps_per_epoch,
                        "seconds_per_step": self.budget.seconds_per_step})

    def _online_knn(self) -> None:
        from .evaluate.knn import knn_monitor

        result = knn_monitor(self.cfg, self.raw_model.backbone, self.device, self.amp_dtype)
        if result is not None:
            self.log.write({"event": "knn", "step": self.step, "epoch": self.step // self.steps_per_epoch, **result})
        self.model.train()

    def _finish(self, reason: str, stop: StopSignal) -> dict:
        done = self.step >= self.total_steps
        if done and self.info.is_main:
            export_backbone(self.raw_model.backbone, self.out / BACKBONE_NAME)
            self.log.write({"event": "done", "step": self.step, "time": time.time()})
        summary = {"run_dir": str(self.out), "step": self.step, "total_steps": self.total_steps, "finished": done,
                   "stopped_by": None if done else reason, "minutes": (time.time() - self.start_time) / 60,
                   "signal": stop.received}
        if stop.received is not None and self.info.is_main:
            from .slurm import requeue_if_slurm

            summary["requeued"] = requeue_if_slurm()
        return summary


class _Window:
    """Loss terms summed on the device between two log lines (no host sync until `flush`)."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(3, device=device)
        self.steps = 0
        self.start = time.time()

    def add(self, result) -> None:
        self.sums += torch.stack([result.loss.detach(), result.on_diag.detach(), result.off_diag.detach()])
        self.steps += 1

    def flush(self, t: Trainer) -> dict:
        loss, on_diag, off_diag = (self.sums / max(self.steps, 1)).tolist()
        now = time.time()
        if not math.isfinite(loss):
            note = f"the last good checkpoint is {t.ckpt_path}" if t.ckpt_path.exists() else "no checkpoint was written"
            raise FloatingPointError(f"loss became {loss} at step {t.step}; lower --lr-weights/--lr-biases or check "
                                     f"the data ({note})")
        record = {"step": t.step, "epoch": round(t.step / t.steps_per_epoch, 4), "loss": loss, "on_diag": on_diag,
                  "off_diag": off_diag, "lr_weights": t.optimizer.param_groups[0]["lr"],
                  "images_per_sec": self.steps * t.cfg.batch_size / max(now - self.start, 1e-9),
                  "elapsed_sec": now - t.start_time, **t.pipeline.metrics()}
        t.log.write(record)
        self.sums.zero_()
        self.steps, self.start = 0, now
        return record


class _Budget:
    """Turns a wall-clock budget into a step count. A first estimate after timing a few steps (the very first
    ones, with their one-off start-up costs, are skipped), then corrections at 10%, 25% and 50% of the run
    from the throughput seen since the last estimate (early steps are often faster than steady state).
    Re-estimates happen at step counts every rank agrees on, and rank 0's number is broadcast."""

    WARM, MEASURE = 3, 12
    CHECKPOINTS = (0.10, 0.25, 0.50)

    def __init__(self, minutes: float | None, start_step: int, upper_bound: int):
        self.minutes = minutes or None  # 0 turns a preset's budget off from the command line
        self.start_step = start_step
        self.upper_bound = upper_bound
        self.fixed = False  # True once no further estimate will be made
        self.estimated_total: int | None = None
        self.mark_step, self.mark_time = None, None
        self.seconds_per_step = None
        self.pending = list(self.CHECKPOINTS)
        self.started = time.time()

    @property
    def active(self) -> bool:
        return self.minutes is not None and not self.fixed

    def observe(self, step: int) -> bool:
        """Called after every step; True when a (new) estimate of the total is due."""
        done = step - self.start_step
        if done == self.WARM:
            self.mark_step, self.mark_time = step, time.time()
        if self.estimated_total is None:
            return done == self.WARM + self.MEASURE
        if self.pending and step >= self.start_step + self.pending[0] * (self.estimated_total - self.start_step):
            self.pending.pop(0)
            return True
        return False

    def total_steps(self, step: int) -> int:
        now = time.time()
        self.seconds_per_step = (now - self.mark_time) / max(step - self.mark_step, 1)
        self.mark_step, self.mark_time = step, now
        remaining = self.minutes * 60 - (now - self.started)
        total = min(step + max(0, int(remaining / self.seconds_per_step)), self.upper_bound)
        total = max(int(D.broadcast_object(total)), step)
        self.estimated_total = total
        self.fixed = not self.pending
        return total


def _should_stop(cfg: PretrainConfig, step: int, start_time: float, stop: StopSignal) -> str:
    """The same decision on every rank: a local reason is shared with an all-reduce (max) under DDP."""
    code = 0
    if stop.received is not None:
        code = 3
    elif cfg.time_limit_minutes is not None and time.time() - start_time > cfg.time_limit_minutes * 60:
        code = 2
    elif cfg.max_steps is not None and step >= cfg.max_steps:
        code = 1
    if D.world_size() > 1:
        t = torch.tensor([code], device="cuda" if torch.distributed.get_backend() == "nccl" else "cpu")
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        code = int(t.item())
    return ("finished", "max_steps", "time_limit", "signal")[code]
