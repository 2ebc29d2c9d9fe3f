"""Barlow Twins pretraining: one code path for one CPU, one GPU, and torchrun/SLURM over many GPUs.

`pretrain(cfg)` does everything `barlowtwins pretrain` does: checks the config, the run folder and the data
before any work, builds data, network and LARS, resumes from the newest good checkpoint in ``<out>`` when there
is one, trains with the paper's per-step schedule, writes metrics as JSON lines, checkpoints atomically (every
``checkpoint_minutes``, at the end, and on a stop), and at the end exports ``backbone.pth``: a plain torchvision
state dict. Nothing non-finite is ever saved.

The loop lives here; its parts live in their own modules: `budget` (a time budget as a step count), `signals`
(stop requests), `metrics` (the JSON-lines log and the loss window), `checkpoints` (the last K checkpoints
with checksums), `preflight` (up-front checks) and `finite` (the finiteness guard).

Under torchrun, ``batch_size`` is global: every rank takes ``batch_size / world_size`` samples, the loss
standardises and correlates over the global batch, BN layers are synchronised, and only rank 0 writes.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

from barlowtwins.data.bad_files import short_reason
from barlowtwins.data.datasets import build_dataset, data_options
from barlowtwins.data.fingerprint import compare, fingerprint
from barlowtwins.data.pipeline import pipeline_from_config
from barlowtwins.errors import CheckpointError, ConfigError, DataError
from barlowtwins.models.barlow_twins import BarlowTwins, build_model
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import describe_os_error
from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.runtime.hardware import autocast, autocast_dtype, select_device, to_device
from barlowtwins.runtime.lock import FolderLock, describe_stale
from barlowtwins.runtime.memory_format import as_input_format, use_channels_last
from barlowtwins.training import signals
from barlowtwins.training.budget import TimeBudget, warmup_steps
from barlowtwins.training.checkpoints import CheckpointStore, remove_stale_temps
from barlowtwins.training.config import PretrainConfig, save_config
from barlowtwins.training.finite import divergence_hint, divergence_message, training_state_tensors
from barlowtwins.training.metrics import LossWindow, MetricsLog
from barlowtwins.training.mixing import mix_draw, mix_weight
from barlowtwins.training.monitor import RunMonitor
from barlowtwins.training.optim import CosineSchedule, build_optimizer, move_state_to_params, set_learning_rates
from barlowtwins.training.preflight import (  # noqa: F401 (RESUME_KEYS)
    RESUME_KEYS,
    check_knn_data,
    check_output_folder,
    check_resume,
    schedule_changes,
)
from barlowtwins.training.progress import Progress
from barlowtwins.training.slurm import requeue_if_slurm
from barlowtwins.transforms.progressive import check_progressive_start
from barlowtwins.weights.run_files import FORMAT
from barlowtwins.weights.save import write_run_backbone


def build_pretrain_model(cfg: PretrainConfig) -> BarlowTwins:
    """The network and loss a config describes (on the CPU, before any wrapping): `build_model` of its fields."""
    return build_model(cfg.backbone, cfg.projector, stem=cfg.stem, width=cfg.width,
                       zero_init_residual=cfg.zero_init_residual, projector_bn=cfg.projector_bn, lambd=cfg.lambd,
                       terms=cfg.loss_terms)


def pretrain(cfg: PretrainConfig) -> dict:
    """Run (or resume) pretraining as configured; return a summary dict (rank 0's view).

    Stop signals are handled from here on (the CLI installs the handlers earlier, on its first line); the
    summary's ``exit_status`` is 0 when the schedule (or ``--max-steps``) was reached and
    `signals.GRACEFUL_STOP_EXIT` when a signal or the time limit stopped the run early.
    """
    installed = signals.install()
    try:
        info = D.init_distributed("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        try:
            with RunFolderLock(cfg.out, info) as lock:
                return Trainer(cfg, info, lock).run()
        finally:
            D.shutdown()
    finally:
        if installed:
            signals.STOP.restore()


# The wall clock of every time-based decision the trainer takes (checkpoints, --time-limit-minutes): a module
# attribute, so that a test can skew it per rank.
clock = time.time

# Below this many steps a run has not been seen to learn anything measurable (benchmarks/RESULTS.md: 34 and 68
# steps on photo-like scenes gave kNN within noise of random initialisation).
MIN_LEARNING_STEPS = 300
LOG_POINTS = 30  # log lines at least, over a whole schedule


class RunFolderLock:
    """The run folder's lock (`FolderLock`, taken by rank 0), held for the whole run: a second run on the same
    ``--out`` is refused with one line naming the first, on every rank. `take` is called by the trainer before it
    reads an existing folder, and for a new folder only once every up-front check has passed, so a refused run
    never creates one."""

    def __init__(self, out, info: D.DistInfo):
        self.lock, self.info, self.held = FolderLock(out), info, False
        self.created = False  # whether take() made the folder: a run refused after it leaves none behind

    def take(self) -> None:
        if self.held:
            return
        error = None
        if self.info.is_main:
            self.created = not self.lock.folder.exists()
            try:
                self.lock.acquire()
            except ConfigError as e:
                error = str(e)
        error = D.broadcast_object(error)
        if error:
            raise ConfigError(error)
        self.held = True
        if self.info.is_main and self.lock.stale:
            print(f"note: {describe_stale(self.lock.stale)}", file=sys.stderr)
        if self.info.is_main and self.lock.unlocked_reason:
            print(f"warning: the run folder is not locked against a second run ({self.lock.unlocked_reason})",
                  file=sys.stderr)

    def __enter__(self) -> "RunFolderLock":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.lock.release()
        if exc_type is not None and self.created:  # refused before any work (bad data ...): the folder goes too
            try:
                if [p.name for p in self.lock.folder.iterdir()] == [self.lock.path.name]:
                    self.lock.path.unlink()
                    self.lock.folder.rmdir()
            except OSError:
                pass


class Trainer:
    """One pretraining run: everything is validated and built in ``__init__``, before any work starts."""

    def __init__(self, cfg: PretrainConfig, info: D.DistInfo, lock: RunFolderLock | None = None):
        self.cfg, self.info, self.world = cfg, info, info.world_size
        self.lock = lock if lock is not None else RunFolderLock(cfg.out, info)
        self.device = select_device(cfg.device, info.local_rank)
        self.amp_dtype = autocast_dtype(cfg.precision, self.device)
        self.out = Path(cfg.out)
        self.store = CheckpointStore(self.out, cfg.keep_checkpoints)
        self.ckpt_path = self.store.latest
        # Up front, in this order: settings, run folder, resume compatibility (before the data set is scanned),
        # the online-kNN data; only then the network and the data.
        self._validate()
        check_output_folder(self.out)
        if self.out.is_dir():  # nobody else may be writing it: checked before it is read
            self.lock.take()
        resumed = self._read_resume()
        self.knn = check_knn_data(cfg)  # the online kNN monitor (None without --knn-every), its data loaded
        self.lock.take()  # a new folder is created only now, every up-front check passed
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        model = build_pretrain_model(cfg)  # checks backbone, stem, width, projector spec
        self.dataset = build_dataset(cfg.dataset, cfg.data_dir, cfg.split, cfg.download,
                                     **data_options(cfg, cfg.dataset))
        self.data_fingerprint = fingerprint(self.dataset)
        if resumed is not None:
            self._check_same_data(resumed)
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
        self.saved_step: int | None = None  # the step of the newest checkpoint on disk
        budget_state = self._resume(model, resumed) if resumed is not None else None
        try:
            self.budget = TimeBudget(cfg.time_budget_minutes, self.step, self.total_steps, budget_state)
        except CheckpointError as e:
            raise CheckpointError(f"{self.resumed_from}: {e}; resume from an earlier checkpoint or choose a new --out"
                                  ) from None
        if self.budget.estimated_total is not None:  # a resumed budget run keeps the length it chose
            self.total_steps = self.budget.estimated_total
        self.schedule = self._schedule()
        self.raw_model, self.model = self._place(model)
        move_state_to_params(self.optimizer)  # the optimiser state follows the model to its device and dtype
        self.log = RunMonitor.for_run(cfg, MetricsLog(self.out / "metrics.jsonl" if info.is_main else None),
                                      self.raw_model, self.out if info.is_main else None)
        self.log.log_every = self.log_every
        self.window = LossWindow(self.device)
        self.start_time = clock()

    def _validate(self) -> None:
        """What depends on the process layout (every field's own range is checked by the config itself)."""
        cfg = self.cfg
        if cfg.batch_size % self.world:
            raise ConfigError(f"--batch-size {cfg.batch_size} is global and must divide evenly over "
                              f"{self.world} processes")
        check_progressive_start(cfg.progressive_start, cfg.image_size)  # before the run folder is made

    def _read_resume(self) -> dict | None:
        """The newest good checkpoint of the run folder, checked against this config (None for a new run)."""
        found = self.store.load_latest()
        if found is None:
            return None
        ckpt, path, problems = found
        if problems and self.info.is_main:
            print(f"warning: {problems[0]}; resuming from the previous checkpoint {path.name}", file=sys.stderr)
        check_resume(ckpt["config"], self.cfg, path)
        self.resumed_from = path
        self.resume_changes = schedule_changes(ckpt["config"], self.cfg)
        return ckpt

    def _check_same_data(self, ckpt: dict) -> None:
        """A resume indexes samples by position: on a changed data set it would silently train on other images
        (and another schedule) than the interrupted run. Refused in one line unless accepted knowingly."""
        change = compare(ckpt.get("data_fingerprint"), self.data_fingerprint)
        if change is None:
            return
        if not self.cfg.accept_data_change:
            raise DataError(f"{change}; resuming would train on other images than the interrupted run: restore "
                            "the data set, choose a new --out, or pass --accept-data-change to resume anyway")
        if self.info.is_main:
            print(f"warning: {change}; resuming anyway (--accept-data-change)", file=sys.stderr)

    def _resume(self, model: nn.Module, ckpt: dict) -> dict | None:
        """Load a checkpoint's weights, optimiser state and step; return its time-budget state."""
        try:
            model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.resumed_from} does not match this network ({str(e).splitlines()[0]}); "
                                  "choose a new --out") from None
        self.step = self.saved_step = int(ckpt["step"])
        if not self.cfg.time_budget_minutes:
            return None
        if isinstance(ckpt.get("budget"), dict):
            return ckpt["budget"]
        if ckpt.get("budget_total_steps"):  # written by earlier versions: the total only
            return {"total_steps": ckpt["budget_total_steps"], "pending": []}
        return None

    def _schedule(self) -> CosineSchedule:
        # A short run logs more often than --log-every, so that its curves have at least LOG_POINTS points (the
        # interval is a function of the schedule's length, which every rank knows: their checks stay aligned).
        self.log_every = max(1, min(self.cfg.log_every, self.total_steps // LOG_POINTS))
        if hasattr(self, "log"):
            self.log.log_every = self.log_every
        budgeted = self.budget.estimated_total is not None
        return CosineSchedule(self.total_steps, warmup_steps(self.warmup_steps, self.total_steps, budgeted),
                            self.cfg.final_lr_ratio)

    def _place(self, model: nn.Module) -> tuple[nn.Module, nn.Module]:
        """Device, memory format, SyncBN and DDP: returns (the plain model, the one to call)."""
        cfg = self.cfg
        model.to(self.device)
        self.channels_last = use_channels_last(model, self.device, cfg.channels_last)
        if self.channels_last:
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
    def _views(self, images) -> list[torch.Tensor]:
        """x1, x2 and multi-crop's small crops (when on): per-sample parameters of (seed, step, position)."""
        return [as_input_format(x, self.channels_last) for x in self.pipeline.all_views(images, self.step)]

    def _crop_weight(self):
        """Multi-crop's weight as a 0-d device tensor, made once (a compiled step would otherwise specialise)."""
        if getattr(self, "_crop_weight_t", None) is None:
            self._crop_weight_t = to_device(torch.tensor(float(self.cfg.multicrop_weight)), self.device)
        return self._crop_weight_t

    def _mix(self, n_local: int):
        """The Mixed Barlow Twins draws of this step (None when off): (perm, alpha, weight) on the device, alpha
        and weight as 0-d tensors (a compiled step would otherwise specialise on each new float)."""
        cfg = self.cfg
        if cfg.mix_weight <= 0:
            return None
        perm, alpha = mix_draw(cfg.seed, self.step, self.info.rank, n_local, cfg.mix_block, cfg.mix_beta)
        scalars = torch.tensor([alpha, mix_weight(cfg.mix_weight, self.step, self.schedule.warmup_steps)])
        scalars = to_device(scalars, self.device)  # pinned and non-blocking on CUDA: no host sync
        return to_device(perm, self.device), scalars[0], scalars[1]

    def train_step(self, images):
        """Schedule, views, forward, backward, LARS. No host sync."""
        set_learning_rates(self.optimizer, self.schedule(self.step) * self.cfg.batch_size / 256)
        x1, x2, *crops = self._views(images)
        extra = {"crops": crops, "crop_weight": self._crop_weight()} if crops else {}
        with autocast(self.device, self.amp_dtype):
            result = self.model(x1, x2, return_parts=True, mix=self._mix(x1.shape[0]), **extra)
        self.optimizer.zero_grad(set_to_none=True)
        result.loss.backward()
        self.optimizer.step()
        self.step += 1
        return result

    # ---- what is saved -------------------------------------------------------------------------------
    def _diverged(self, what: str, loss: dict | None, weights_only: bool = False) -> FloatingPointError:
        last = (f"the last good checkpoint is {self.ckpt_path} (step {self.saved_step})"
                if self.saved_step is not None else "no checkpoint had been written")
        cfg = self.cfg
        hint = divergence_hint(first_steps=self.step <= 2, weights_only=weights_only, amp=self.amp_dtype is not None,
                               lr_weights=cfg.lr_weights, lr_biases=cfg.lr_biases, eta=cfg.eta, optimizer=cfg.optimizer)
        return FloatingPointError(divergence_message(step=self.step, what=what, loss=loss, lrs=[
            g["lr"] for g in self.optimizer.param_groups], last_good=last, hint=hint))

    def ensure_finite(self) -> None:
        """Raise `FloatingPointError` unless the loss window and every tensor a checkpoint holds are finite.

        Every rank reaches the same verdict (the parameters and the global loss are replicated)."""
        window = self.window.means()
        if not all(math.isfinite(v) for v in window.values()):
            raise self._diverged("the loss", window)
        bad = nonfinite_names(training_state_tensors(self.raw_model, self.optimizer))
        if bad:
            raise self._diverged(f"{bad[0]} (and {len(bad) - 1} more tensors)" if len(bad) > 1 else bad[0],
                                 self.window.last or window, weights_only=True)

    def checkpoint_state(self) -> dict:
        """Everything a resume needs, as plain tensors and containers (loadable with weights_only=True)."""
        return {"format": FORMAT, "version": 2, "step": self.step,
                "epoch": self.step / self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                "total_steps": self.total_steps, "budget": self.budget.state(),
                "budget_total_steps": self.budget.estimated_total,
                "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "config": self.cfg.to_dict(), "world_size": self.world, "data_fingerprint": self.data_fingerprint}

    def save_checkpoint(self, reason: str) -> None:
        """The one place the run writes its state: a finiteness check, then the checkpoint (rank 0).

        Every rank calls it. A write failure on rank 0 (disk full) is shared with the other ranks, so all of them
        stop with the same one-line error and none waits forever in a collective."""
        self.ensure_finite()
        error = None
        if self.info.is_main:
            try:
                self.store.save(self.checkpoint_state())
                # backbone.pth / .safetensors always current, so a stopped run needs no export step
                write_run_backbone(self.raw_model.backbone, self.out, self.cfg.to_dict())
            except CheckpointError as e:
                error = str(e)
            except OSError as e:
                error = (f"cannot write the backbone files in {self.out} ({e.strerror or e}); the checkpoint is "
                         "saved: free disk space and run the same command again")
        error = D.broadcast_object(error)
        if error:
            raise CheckpointError(error)
        self.saved_step = self.step
        self.log.write({"event": "checkpoint", "step": self.step, "reason": reason, "time": time.time()})

    # ---- the loop ------------------------------------------------------------------------------------
    def _decision_step(self) -> bool:
        """True after the steps at which the run decides whether to stop or checkpoint: every step on one
        process; under DDP the steps every rank knows without asking (log steps, epoch ends, the end of the
        schedule, ``--max-steps``), since each decision is a collective and a host sync."""
        step, cfg = self.step, self.cfg
        return (self.world == 1 or step % self.log_every == 0 or step % self.steps_per_epoch == 0
                or step >= self.total_steps or (cfg.max_steps is not None and step >= cfg.max_steps))

    def _decide(self, last_checkpoint: float | None) -> signals.Decision:
        """Stop or go, and whether a checkpoint is due (``checkpoint_minutes`` since the last one on rank 0's
        clock): one answer for every rank (`signals.decide`). ``last_checkpoint`` None: only the stop question."""
        now = clock()
        due = last_checkpoint is not None and now - last_checkpoint > self.cfg.checkpoint_minutes * 60
        return signals.decide(self.step, max_steps=self.cfg.max_steps, time_limit_minutes=self.cfg.time_limit_minutes,
                              start_time=self.start_time, now=now, write_failed=self.log.write_error is not None,
                              checkpoint_due=due)

    def run(self) -> dict:
        cfg, info = self.cfg, self.info
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)
            try:
                self.log.rewind(self.step)  # records after the checkpoint are about to be written again
                save_config(cfg, self.out / "config.yaml")
                if self.saved_step is not None:
                    # the backbone files hold the resumed state, whatever a kill between files left behind
                    write_run_backbone(self.raw_model.backbone, self.out, cfg.to_dict())
            except OSError as e:
                raise CheckpointError(describe_os_error(e)) from None
            if self.saved_step is not None:
                self._say_resumed()
            self.log.write({"event": "start" if self.step == 0 else "resume", "step": self.step,
                            "world_size": self.world, "device": str(self.device),
                            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
                            "images": len(self.dataset), "time": time.time()})
        bar = None
        if info.is_main and cfg.progress:
            bar = Progress.for_run(cfg, self.total_steps, self.step)
        self.bar = bar
        self.start_time = last_ckpt = clock()
        self.window = LossWindow(self.device)
        # A stop asked for during set-up, or --max-steps already reached (a rerun): no step is taken.
        reason = self._decide(None).reason
        self.model.train()
        try:
            while self.step < self.total_steps and reason == "finished":
                epoch, first = divmod(self.step, self.steps_per_epoch)
                for images, _, _ in self.log.batches(self.pipeline.epoch(epoch, start=first)):
                    result = self.train_step(images)
                    self.window.add(result)
                    self.log.after_step(self.step, result)
                    if self.budget.active and self.budget.observe(self.step):  # at steps every rank agrees on
                        self._fix_budget(bar)
                    if bar is not None:
                        bar.update(1)
                    if self.step % self.log_every == 0 or self.step == self.total_steps:
                        record = self._log_window()  # the only host syncs of the loop
                        if bar is not None:
                            bar.set_postfix(loss=f"{record['loss']:.1f}", img_s=f"{record['images_per_sec']:.0f}",
                                            epoch=f"{record['epoch']:.2f}")
                    if self._decision_step():
                        # A checkpoint at a log step or an epoch's end when rank 0's clock says one is due, at the
                        # end, and on a stop; an epoch's end is no checkpoint of its own (a small folder makes one
                        # every few seconds, and a resume is exact from any step).
                        asks = self.step % self.log_every == 0 or self.step % self.steps_per_epoch == 0
                        decision = self._decide(last_ckpt if asks else None)
                        reason = decision.reason
                        if decision.checkpoint or self.step >= self.total_steps or reason != "finished":
                            if self.saved_step != self.step:
                                self.save_checkpoint(self._checkpoint_reason(reason))
                            last_ckpt = clock()
                    if self.step >= self.total_steps or reason != "finished":
                        break
                epoch_done = self.step % self.steps_per_epoch == 0
                if cfg.knn_every and reason == "finished" and epoch_done and \
                        (self.step // self.steps_per_epoch) % cfg.knn_every == 0:
                    self._online_knn()
        finally:
            if bar is not None:
                bar.close()
            self.log.close()
        return self._finish(reason)

    def _checkpoint_reason(self, reason: str) -> str:
        """How metrics.jsonl names a checkpoint: the stop's reason, else ``epoch`` at an epoch's end or the end of
        the schedule, else ``periodic``."""
        if reason != "finished":
            return reason
        return "epoch" if self.step % self.steps_per_epoch == 0 or self.step >= self.total_steps else "periodic"

    def _say(self, line: str, bar=None) -> None:
        if bar is not None:
            bar.write(line)
        else:
            print(line, flush=True)

    def _plan_line(self) -> str:
        """The budget's first estimate, said once: steps, epochs, the rate measured, and a warning when the budget
        buys too few steps for the method to learn anything measurable."""
        per_minute = 60 / self.budget.seconds_per_step if self.budget.seconds_per_step else 0.0
        epochs = self.total_steps / self.steps_per_epoch
        line = (f"plan: {self.total_steps} steps ({epochs:.1f} epochs of {self.steps_per_epoch} steps) in "
                f"{self.cfg.time_budget_minutes:g} minutes at {per_minute:.0f} steps/min measured")
        if self.total_steps < MIN_LEARNING_STEPS:
            line += (f"\nwarning: {self.total_steps} steps are too few for Barlow Twins to learn much (a few hundred "
                     "is the least we have seen help); raise --time-budget-minutes, or make steps cheaper: a lower "
                     "--image-size, a smaller --width or --batch-size")
        return line

    def _say_resumed(self) -> None:
        """The first line of a resumed run: where it continues, and what the rerun changed in the schedule."""
        line = (f"resumed from step {self.step} of {self.total_steps} (epoch {self.step / self.steps_per_epoch:.2f}) "
                f"from {self.resumed_from}")
        changes = getattr(self, "resume_changes", [])
        if changes:
            line += f"; schedule changed ({', '.join(changes)}): the learning rate follows the new schedule from here"
        if self.step >= self.total_steps:
            line += "; the schedule is already complete (train longer with a larger --epochs, or a new --out)"
        self._say(line)

    def _log_window(self) -> dict:
        """Flush the loss window into metrics.jsonl; a non-finite loss stops the run before anything is saved."""
        means = self.window.means()
        if not all(math.isfinite(v) for v in means.values()):
            raise self._diverged("the loss", means)
        w = self.window.flush()
        record = {"step": self.step, "epoch": round(self.step / self.steps_per_epoch, 4), "loss": w["loss"],
                  "on_diag": w["on_diag"], "off_diag": w["off_diag"], "lr_weights": self.optimizer.param_groups[0]["lr"],
                  "images_per_sec": w["steps"] * self.cfg.batch_size / w["seconds"],
                  "elapsed_sec": clock() - self.start_time, **self.pipeline.metrics()}
        if "mix" in w:  # the Mixed Barlow Twins regulariser R, before its weight
            record["mix"] = w["mix"]
        if "crops" in w:  # multi-crop's small-crop term, before its weight
            record["crops"] = w["crops"]
        if self.pipeline.sizes is not None:  # progressive resolution: the size of the last step's views
            record["image_size"] = self.pipeline.image_size(max(self.step - 1, 0))
        self.log.write(record)
        return record

    def _fix_budget(self, bar) -> None:
        """Set the schedule's length from the throughput measured so far, so that it ends inside the budget."""
        self.total_steps = self.budget.total_steps(self.step)
        self.schedule = self._schedule()
        if bar is not None:
            bar.total = self.total_steps
            bar.refresh()
        if self.info.is_main and not getattr(self, "_plan_said", False):
            self._plan_said = True
            self._say(self._plan_line(), bar)
        self.log.write({"event": "budget", "total_steps": self.total_steps,
                        "epochs": self.total_steps / self.steps_per_epoch,
                        "warmup_steps": self.schedule.warmup_steps,
                        "seconds_per_step": self.budget.seconds_per_step})

    def _online_knn(self) -> None:
        result = self.knn(self.raw_model.backbone, self.device, self.amp_dtype)
        if result is not None:
            epoch = self.step // self.steps_per_epoch
            self.log.write({"event": "knn", "step": self.step, "epoch": epoch, **result})
            if self.info.is_main:
                shown = ", ".join(f"{k.split('_')[1]} {v:.2f}" for k, v in result.items())  # knn_k=20_top1 -> k=20
                self._say(f"epoch {epoch}: online kNN top-1 {shown}", self.bar)
        self.model.train()

    def _finish(self, reason: str) -> dict:
        if reason == "write_error":  # stopped with a checkpoint because a log could not be appended to
            error = self.log.write_error
            message = D.broadcast_object(None if error is None else describe_os_error(error))
            where = (f"the run stopped with a checkpoint at step {self.step} (run the same command again to resume)"
                     if self.saved_step == self.step and self.step else "nothing was trained")
            raise CheckpointError(f"{message or 'rank 0 could not write its logs'}; {where}")
        done = self.step >= self.total_steps
        if done:
            self.ensure_finite()
            if self.info.is_main:
                write_run_backbone(self.raw_model.backbone, self.out, self.cfg.to_dict())
                self.log.write({"event": "done", "step": self.step, "time": time.time()})
        early = not done and reason in ("signal", "time_limit")
        summary = {"run_dir": str(self.out), "step": self.step, "total_steps": self.total_steps, "finished": done,
                   "stopped_by": None if done else reason, "minutes": (clock() - self.start_time) / 60,
                   "signal": signals.STOP.received,
                   "skipped": [{"file": f, "reason": short_reason(r)}
                               for f, r in getattr(self.pipeline, "skipped", {}).items()],
                   "exit_status": signals.GRACEFUL_STOP_EXIT if early else 0}
        if signals.STOP.received is not None and self.info.is_main:

            summary["requeued"] = requeue_if_slurm()
        return summary
