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
import time

import torch

from barlowtwins.data.bad_files import short_reason
from barlowtwins.errors import CheckpointError, ConfigError
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import describe_os_error
from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.runtime.hardware import to_device
from barlowtwins.runtime.lock import FolderLock, describe_stale
from barlowtwins.runtime.log import NOTE, console_unconfigured, enable_console, get_logger
from barlowtwins.runtime.memory_format import as_input_format
from barlowtwins.training import signals
from barlowtwins.training.autoconfig import fit_to_data
from barlowtwins.training.checkpoints import remove_stale_temps
from barlowtwins.training.config import PretrainConfig, save_config
from barlowtwins.training.finite import divergence_hint, divergence_message, training_state_tensors
from barlowtwins.training.metrics import LossWindow
from barlowtwins.training.mixing import mix_draw, mix_weight
from barlowtwins.training.optim import set_learning_rates
from barlowtwins.training.progress import Progress
from barlowtwins.training.run import build_run
from barlowtwins.training.slurm import requeue_if_slurm
from barlowtwins.training.step import optimizer_step
from barlowtwins.weights.run_files import FORMAT
from barlowtwins.weights.save import write_run_backbone

log = get_logger(__name__)


def pretrain(cfg: PretrainConfig, *, fit: bool = True) -> dict:
    """Run (or resume) pretraining as configured; return a summary dict (rank 0's view).

    ``fit=True`` (default) first fits the fields ``cfg`` leaves unset to the data, exactly as ``barlowtwins
    pretrain`` does without a preset (`autoconfig.fit_to_data`: on a CPU the short-run recipe for a folder of
    images, for small images their own size and a fitting network; a preset decides by itself): the fields set
    (given to ``PretrainConfig``, or other than their default: `config.explicit_fields`) are kept. When it changed
    something it prints the CLI's note (rank 0); the summary's ``note`` holds it (None with a preset or without a
    fit). ``fit=False`` runs ``cfg`` as it is (``barlowtwins pretrain`` fits first, then calls it so).

    The run's lines (the note, the plan, one line per ``log_every`` steps, warnings) are `logging` records of the
    ``barlowtwins`` loggers; where the program has set up no logging, they are printed as the CLI prints them
    (`runtime.log.enable_console`).

    Stop signals are handled from here on (the CLI installs the handlers earlier, on its first line); the
    summary's ``exit_status`` is 0 when the schedule (or ``--max-steps``) was reached and
    `signals.GRACEFUL_STOP_EXIT` when a signal or the time limit stopped the run early. A run that ``max_steps``
    stopped before the end of its schedule says so in one line (rank 0): the learning rate followed the full
    schedule, so it never decayed to the schedule's end.
    """
    if console_unconfigured():  # a program that set up no logging sees the run's lines, as the CLI shows them
        enable_console()
    installed = signals.install()
    try:
        info = D.init_distributed("cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu")
        try:
            note = None
            if fit:
                fitted, note = fit_to_data(cfg)
                if fitted != cfg and note and info.is_main:
                    log.info(note)
                cfg = fitted
            with RunFolderLock(cfg.out, info) as lock:
                summary = Trainer(cfg, info, lock).run()
            summary["note"] = note
            if summary.get("stopped_by") == "max_steps" and info.is_main:
                step, total = summary["step"], summary["total_steps"]
                log.info(f"reached --max-steps {cfg.max_steps} at step {step} of the {total}-step schedule "
                         f"(--max-steps stops every run there; the learning rate follows the full schedule, so it has "
                         f"not decayed as it would by step {total}): to continue, rerun with a larger --max-steps or "
                         f"without it; for a short run, shorten the schedule instead (--epochs or "
                         f"--time-budget-minutes); the backbone of step {step} is in {summary['run_dir']}/backbone.pth "
                         f"(and .safetensors)")
            return summary
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
            log.log(NOTE, f"note: {describe_stale(self.lock.stale)}")
        if self.info.is_main and self.lock.unlocked_reason:
            log.warning(f"warning: the run folder is not locked against a second run ({self.lock.unlocked_reason})")

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
    """One pretraining run: its parts built and checked before any work (`build_run`), then the loop (`run`):
    one step per batch, after each the per-step decisions (`after_step`)."""

    def __init__(self, cfg: PretrainConfig, info: D.DistInfo, lock: RunFolderLock | None = None):
        self.cfg, self.info = cfg, info
        self.run_parts = build_run(cfg, info, lock if lock is not None else RunFolderLock(cfg.out, info))
        r = self.run_parts
        self.step = r.start_step
        self.saved_step = r.saved_step
        self.window = LossWindow(r.device)
        self.bar: Progress | None = None  # the terminal bar of rank 0 (set by run)
        self.start_time = self.last_checkpoint = clock()
        self.plan_said = False  # the budget's plan line is said once
        # multi-crop's weight as a 0-d device tensor, made once (a compiled step would otherwise specialise)
        self.crop_weight = to_device(torch.tensor(float(cfg.multicrop_weight)), r.device)

    # ---- one step ------------------------------------------------------------------------------------
    def _views(self, images) -> list[torch.Tensor]:
        """x1, x2 and multi-crop's small crops (when on): per-sample parameters of (seed, step, position)."""
        r = self.run_parts
        return [as_input_format(x, r.channels_last) for x in r.pipeline.all_views(images, self.step)]

    def _mix(self, n_local: int):
        """The Mixed Barlow Twins draws of this step (None when off): (perm, alpha, weight) on the device, alpha
        and weight as 0-d tensors (a compiled step would otherwise specialise on each new float)."""
        cfg, r = self.cfg, self.run_parts
        if cfg.mix_weight <= 0:
            return None
        perm, alpha = mix_draw(cfg.seed, self.step, self.info.rank, n_local, cfg.mix_block, cfg.mix_beta)
        scalars = torch.tensor([alpha, mix_weight(cfg.mix_weight, self.step, r.plan.schedule.warmup_steps)])
        scalars = to_device(scalars, r.device)  # pinned and non-blocking on CUDA: no host sync
        return to_device(perm, r.device), scalars[0], scalars[1]

    def train_step(self, images):
        """Schedule, views, forward, backward, LARS. No host sync."""
        r = self.run_parts
        set_learning_rates(r.optimizer, r.plan.schedule(self.step) * self.cfg.batch_size / 256)
        x1, x2, *crops = self._views(images)
        extra = {"crops": crops, "crop_weight": self.crop_weight} if crops else {}
        result = optimizer_step(r.called, r.optimizer, r.device, r.amp_dtype, x1, x2, mix=self._mix(x1.shape[0]),
                                **extra)
        self.step += 1
        return result

    # ---- the loop ------------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train from the resumed step to the end of the schedule, a stop or ``--max-steps``; the summary."""
        r = self.run_parts
        self._start()
        reason = self._decide(None).reason  # a stop during set-up, or --max-steps already reached: no step
        r.called.train()
        try:
            if reason == "finished":
                for images in self._batches():
                    result = self.train_step(images)
                    reason = self.after_step(result)
                    if reason != "continue":
                        break
                else:
                    reason = "finished"
        finally:
            if self.bar is not None:
                self.bar.close()
            r.log.close()
        return self._finish(reason)

    def _batches(self):
        """This rank's batches from ``self.step`` on, epoch after epoch, while the step is within the schedule
        (whose length a time budget may change on the way)."""
        r = self.run_parts
        while self.step < r.plan.total_steps:
            epoch, first = divmod(self.step, r.steps_per_epoch)
            for images, _, _ in r.log.batches(r.pipeline.epoch(epoch, start=first)):
                yield images
                if self.step >= r.plan.total_steps:
                    return

    def after_step(self, result) -> str:
        """Everything decided after a step, in one place: the loss window and its log line, the budget's re-plan,
        a checkpoint, a stop, the online kNN at an epoch's end. Each is a function of the step, or of one
        all-reduced answer (`signals.decide`), so every rank takes the same turns. Returns ``"continue"``, or why
        the loop ends (``"finished"``, or the stop's reason)."""
        r = self.run_parts
        plan, cfg = r.plan, self.cfg
        self.window.add(result)
        r.log.after_step(self.step, result)
        if r.budget.active and r.budget.observe(self.step):  # at steps every rank agrees on
            self._replan()
        if self.bar is not None:
            self.bar.update(1)
        if self.step % plan.log_every == 0 or self.step == plan.total_steps:
            record = self._log_window()  # the only host syncs of the loop
            if self.bar is not None:
                self.bar.set_postfix(loss=f"{record['loss']:.1f}", img_s=f"{record['images_per_sec']:.0f}",
                                     epoch=f"{record['epoch']:.2f}")
        reason = "finished"
        if self._decision_step():
            # A checkpoint at a log step or an epoch's end when rank 0's clock says one is due, at the end, and on
            # a stop; an epoch's end is no checkpoint of its own (a small folder makes one every few seconds, and a
            # resume is exact from any step).
            asks = self.step % plan.log_every == 0 or self.step % r.steps_per_epoch == 0
            decision = self._decide(self.last_checkpoint if asks else None)
            reason = decision.reason
            if decision.checkpoint or self.step >= plan.total_steps or reason != "finished":
                if self.saved_step != self.step:
                    self.save_checkpoint(self._checkpoint_reason(reason))
                self.last_checkpoint = clock()
        if reason == "finished" and cfg.knn_every and self.step % r.steps_per_epoch == 0 and \
                (self.step // r.steps_per_epoch) % cfg.knn_every == 0:
            self._online_knn()
        if reason != "finished":
            return reason
        return "finished" if self.step >= plan.total_steps else "continue"

    def _decision_step(self) -> bool:
        """True after the steps at which the run decides whether to stop or checkpoint: every step on one
        process; under DDP the steps every rank knows without asking (log steps, epoch ends, the end of the
        schedule, ``--max-steps``), since each decision is a collective and a host sync."""
        r, step, cfg = self.run_parts, self.step, self.cfg
        return (r.world == 1 or step % r.plan.log_every == 0 or step % r.steps_per_epoch == 0
                or step >= r.plan.total_steps or (cfg.max_steps is not None and step >= cfg.max_steps))

    def _decide(self, last_checkpoint: float | None) -> signals.Decision:
        """Stop or go, and whether a checkpoint is due (``checkpoint_minutes`` since the last one on rank 0's
        clock): one answer for every rank (`signals.decide`). ``last_checkpoint`` None: only the stop question."""
        now = clock()
        due = last_checkpoint is not None and now - last_checkpoint > self.cfg.checkpoint_minutes * 60
        failed = self.run_parts.log.write_error is not None
        return signals.decide(self.step, max_steps=self.cfg.max_steps, time_limit_minutes=self.cfg.time_limit_minutes,
                              start_time=self.start_time, now=now, write_failed=failed, checkpoint_due=due)

    def _checkpoint_reason(self, reason: str) -> str:
        """How metrics.jsonl names a checkpoint: the stop's reason, else ``epoch`` at an epoch's end or the end of
        the schedule, else ``periodic``."""
        if reason != "finished":
            return reason
        r = self.run_parts
        return "epoch" if self.step % r.steps_per_epoch == 0 or self.step >= r.plan.total_steps else "periodic"

    # ---- what is saved -------------------------------------------------------------------------------
    def _diverged(self, what: str, loss: dict | None, weights_only: bool = False) -> FloatingPointError:
        r, cfg = self.run_parts, self.cfg
        last = (f"the last good checkpoint is {r.store.latest} (step {self.saved_step})"
                if self.saved_step is not None else "no checkpoint had been written")
        hint = divergence_hint(first_steps=self.step <= 2, weights_only=weights_only, amp=r.amp_dtype is not None,
                               lr_weights=cfg.lr_weights, lr_biases=cfg.lr_biases, eta=cfg.eta, optimizer=cfg.optimizer)
        return FloatingPointError(divergence_message(step=self.step, what=what, loss=loss, lrs=[
            g["lr"] for g in r.optimizer.param_groups], last_good=last, hint=hint))

    def ensure_finite(self) -> None:
        """Raise `FloatingPointError` unless the loss window and every tensor a checkpoint holds are finite.

        Every rank reaches the same verdict (the parameters and the global loss are replicated)."""
        window = self.window.means()
        if not all(math.isfinite(v) for v in window.values()):
            raise self._diverged("the loss", window)
        bad = nonfinite_names(training_state_tensors(self.run_parts.model, self.run_parts.optimizer))
        if bad:
            raise self._diverged(f"{bad[0]} (and {len(bad) - 1} more tensors)" if len(bad) > 1 else bad[0],
                                 self.window.last or window, weights_only=True)

    def checkpoint_state(self) -> dict:
        """Everything a resume needs, as plain tensors and containers (loadable with weights_only=True)."""
        r = self.run_parts
        return {"format": FORMAT, "version": 2, "step": self.step,
                "epoch": self.step / r.steps_per_epoch, "steps_per_epoch": r.steps_per_epoch,
                "total_steps": r.plan.total_steps, "budget": r.budget.state(),
                "budget_total_steps": r.budget.estimated_total,
                "model": r.model.state_dict(), "optimizer": r.optimizer.state_dict(),
                "config": self.cfg.to_dict(), "world_size": r.world, "data_fingerprint": r.data_fingerprint,
                "precision": r.precision.name}

    def save_checkpoint(self, reason: str) -> None:
        """The one place the run writes its state: a finiteness check, then the checkpoint (rank 0).

        Every rank calls it. A write failure on rank 0 (disk full) is shared with the other ranks, so all of them
        stop with the same one-line error and none waits forever in a collective."""
        r = self.run_parts
        self.ensure_finite()
        error = None
        if self.info.is_main:
            try:
                r.store.save(self.checkpoint_state())
                # backbone.pth / .safetensors always current, so a stopped run needs no export step
                write_run_backbone(r.model.backbone, r.out, self.cfg.to_dict())
            except CheckpointError as e:
                error = str(e)
            except OSError as e:
                error = (f"cannot write the backbone files in {r.out} ({e.strerror or e}); the checkpoint is "
                         "saved: free disk space and run the same command again")
        error = D.broadcast_object(error)
        if error:
            raise CheckpointError(error)
        self.saved_step = self.step
        r.log.write({"event": "checkpoint", "step": self.step, "reason": reason, "time": time.time()})

    # ---- start, log lines, re-plan, online kNN, finish -----------------------------------------------------
    def _start(self) -> None:
        """Rank 0 writes the run folder's config and first record (and, on a resume, the backbone files of the
        resumed state); the clocks start."""
        r, cfg = self.run_parts, self.cfg
        if self.info.is_main:
            r.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(r.out)
            try:
                r.log.rewind(self.step)  # records after the checkpoint are about to be written again
                save_config(cfg, r.out / "config.yaml", notes={"precision": f"ran {r.precision.describe()}"})
                if self.saved_step is not None:
                    # the backbone files hold the resumed state, whatever a kill between files left behind
                    write_run_backbone(r.model.backbone, r.out, cfg.to_dict())
            except OSError as e:
                raise CheckpointError(describe_os_error(e)) from None
            if self.saved_step is not None:
                self._say_resumed()
                if r.resumed_precision not in (None, r.precision.name):  # auto, resumed on another processor
                    log.warning(f"warning: this run trained in {r.resumed_precision} up to step {self.step} and goes "
                                f"on in {r.precision.describe()}: it will not end bit-identical to a run trained "
                                f"straight through in one precision")
            self._say(f"training on {r.device} ({r.world} process{'es' if r.world > 1 else ''}) in "
                      f"{r.precision.describe()}")
            r.log.write({"event": "start" if self.step == 0 else "resume", "step": self.step,
                         "world_size": r.world, "device": str(r.device),
                         "precision": r.precision.name, "precision_reason": r.precision.reason,
                         "steps_per_epoch": r.steps_per_epoch, "total_steps": r.plan.total_steps,
                         "images": len(r.dataset), "time": time.time()})
            if cfg.progress:
                self.bar = Progress.for_run(cfg, r.plan.total_steps, self.step)
        self.start_time = self.last_checkpoint = clock()
        self.window = LossWindow(r.device)

    def _say(self, line: str) -> None:
        if self.bar is not None:
            self.bar.write(line)
        else:
            log.info(line)

    def _plan_line(self) -> str:
        """The budget's first estimate, said once: steps, epochs, the rate measured, and a warning when the budget
        buys too few steps for the method to learn anything measurable."""
        r = self.run_parts
        total = r.plan.total_steps
        per_minute = 60 / r.budget.seconds_per_step if r.budget.seconds_per_step else 0.0
        line = (f"plan: {total} steps ({total / r.steps_per_epoch:.1f} epochs of {r.steps_per_epoch} steps) in "
                f"{self.cfg.time_budget_minutes:g} minutes at {per_minute:.0f} steps/min measured")
        if total < MIN_LEARNING_STEPS:
            line += (f"\nwarning: {total} steps are too few for Barlow Twins to learn much (a few hundred "
                     "is the least we have seen help); raise --time-budget-minutes, or make steps cheaper: a lower "
                     "--image-size, a smaller --width or --batch-size")
        return line

    def _say_resumed(self) -> None:
        """The first line of a resumed run: where it continues, and what the rerun changed in the schedule."""
        r = self.run_parts
        line = (f"resumed from step {self.step} of {r.plan.total_steps} (epoch {self.step / r.steps_per_epoch:.2f}) "
                f"from {r.resumed_from}")
        if r.resume_changes:
            line += (f"; schedule changed ({', '.join(r.resume_changes)}): the learning rate follows the new schedule "
                     "from here")
        if self.step >= r.plan.total_steps:
            line += "; the schedule is already complete (train longer with a larger --epochs, or a new --out)"
        self._say(line)

    def _log_window(self) -> dict:
        """Flush the loss window into metrics.jsonl; a non-finite loss stops the run before anything is saved."""
        r = self.run_parts
        means = self.window.means()
        if not all(math.isfinite(v) for v in means.values()):
            raise self._diverged("the loss", means)
        w = self.window.flush()
        record = {"step": self.step, "epoch": round(self.step / r.steps_per_epoch, 4), "loss": w["loss"],
                  "on_diag": w["on_diag"], "off_diag": w["off_diag"], "lr_weights": r.optimizer.param_groups[0]["lr"],
                  "images_per_sec": w["steps"] * self.cfg.batch_size / w["seconds"],
                  "elapsed_sec": clock() - self.start_time, **r.pipeline.metrics()}
        if "mix" in w:  # the Mixed Barlow Twins regulariser R, before its weight
            record["mix"] = w["mix"]
        if "crops" in w:  # multi-crop's small-crop term, before its weight
            record["crops"] = w["crops"]
        if r.pipeline.sizes is not None:  # progressive resolution: the size of the last step's views
            record["image_size"] = r.pipeline.image_size(max(self.step - 1, 0))
        r.log.write(record)
        return record

    def _replan(self) -> None:
        """Set the schedule's length from the throughput measured so far, so that it ends inside the budget."""
        r = self.run_parts
        r.plan.replan(r.budget.total_steps(self.step), budgeted=r.budget.estimated_total is not None)
        r.log.log_every = r.plan.log_every
        if self.bar is not None:
            self.bar.total = r.plan.total_steps
            self.bar.refresh()
        if self.info.is_main and not self.plan_said:
            self.plan_said = True
            self._say(self._plan_line())
        r.log.write({"event": "budget", "total_steps": r.plan.total_steps,
                     "epochs": r.plan.total_steps / r.steps_per_epoch,
                     "warmup_steps": r.plan.schedule.warmup_steps,
                     "seconds_per_step": r.budget.seconds_per_step})

    def _online_knn(self) -> None:
        r = self.run_parts
        result = r.knn(r.model.backbone, r.device, r.amp_dtype)
        if result is not None:
            epoch = self.step // r.steps_per_epoch
            r.log.write({"event": "knn", "step": self.step, "epoch": epoch, **result})
            if self.info.is_main:
                shown = ", ".join(f"{k.split('_')[1]} {v:.2f}" for k, v in result.items())  # knn_k=20_top1 -> k=20
                self._say(f"epoch {epoch}: online kNN top-1 {shown}")
        r.called.train()

    def _finish(self, reason: str) -> dict:
        r = self.run_parts
        if reason == "write_error":  # stopped with a checkpoint because a log could not be appended to
            error = r.log.write_error
            message = D.broadcast_object(None if error is None else describe_os_error(error))
            where = (f"the run stopped with a checkpoint at step {self.step} (run the same command again to resume)"
                     if self.saved_step == self.step and self.step else "nothing was trained")
            raise CheckpointError(f"{message or 'rank 0 could not write its logs'}; {where}")
        done = self.step >= r.plan.total_steps
        if done:
            self.ensure_finite()
            if self.info.is_main:
                write_run_backbone(r.model.backbone, r.out, self.cfg.to_dict())
                r.log.write({"event": "done", "step": self.step, "time": time.time()})
        early = not done and reason in ("signal", "time_limit")
        summary = {"run_dir": str(r.out), "step": self.step, "total_steps": r.plan.total_steps, "finished": done,
                   "stopped_by": None if done else reason, "minutes": (clock() - self.start_time) / 60,
                   "signal": signals.STOP.received,
                   "skipped": [{"file": f, "reason": short_reason(why)}
                               for f, why in getattr(r.pipeline, "skipped", {}).items()],
                   "exit_status": signals.GRACEFUL_STOP_EXIT if early else 0}
        if signals.STOP.received is not None and self.info.is_main:
            summary["requeued"] = requeue_if_slurm()
        return summary
