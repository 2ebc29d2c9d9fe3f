"""Checks a pretraining run makes before any work: the run folder, the online-kNN data, resume compatibility.

Each failure is one line (`ConfigError`/`DataError`) naming the problem and the fix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from barlowtwins.errors import field_error
from barlowtwins.training.knn_monitor import KnnMonitor

# Fields that must not change when a run is resumed: they define the network, the meaning of a step, or (seed)
# the data order and augmentations the run replays.
RESUME_KEYS = ("dataset", "split", "backbone", "stem", "width", "projector", "projector_bn", "batch_size", "image_size",
               "optimizer", "seed", "mix_weight", "mix_beta", "mix_block", "progressive_start", "progressive_epochs",
               "multicrop_count", "multicrop_size", "multicrop_scale", "multicrop_weight")


def check_output_folder(out: str | os.PathLike) -> None:
    """``out`` is (or can be created as) a writable folder."""
    out = Path(out)
    for part in out.parts:
        if len(os.fsencode(part)) > 255:  # NAME_MAX of every common file system
            raise field_error(lambda n: f"{n('out')} has a folder name of {len(os.fsencode(part))} bytes "
                                        f"({part[:40]}...); file systems allow at most 255: choose a shorter "
                                        f"{n('out')}")
    if out.exists() and not out.is_dir():
        raise field_error(lambda n: f"{n('out')} {out} is a file, not a folder; choose another {n('out')}")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise field_error(lambda n: f"{n('out')} {out} cannot be created: {existing} is a file; choose another "
                                    f"{n('out')}")
    try:  # os.access says yes to root on a read-only mount: try a real write
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = e.strerror or str(e)
        raise field_error(lambda n: f"{n('out')} {out} is not writable ({why}); choose another "
                                    f"{n('out')}") from None


def check_knn_data(cfg) -> KnnMonitor | None:
    """The online kNN monitor, its labelled data loaded (so a missing folder or split fails here); None without
    ``--knn-every``."""
    if not cfg.knn_every:
        return None
    if (cfg.knn_dataset or cfg.dataset) == "images":
        raise field_error(lambda n: f"{n('knn_every')} needs labelled data: give {n('knn_dataset')} (and "
                                    f"{n('knn_data_dir')}), e.g. {n('knn_dataset')} folder {n('knn_data_dir')} "
                                    "/data/imagenet")
    return KnnMonitor(cfg)


def check_resume(saved: dict, cfg, path: Path) -> None:
    """A run folder's checkpoint was made with the same network, data, batch size and seed as ``cfg``."""
    defaults = type(cfg).__dataclass_fields__
    was = {k: saved.get(k, defaults[k].default) for k in RESUME_KEYS}
    now = {k: getattr(cfg, k) for k in RESUME_KEYS}
    diffs = [f"{k}={was[k]!r} (now {now[k]!r})" for k in RESUME_KEYS if was[k] != now[k]]
    if diffs:
        raise field_error(lambda n: f"run folder {path.parent} was started with {', '.join(diffs)}; resume with the "
                                    f"same settings or choose a new {n('out')}")
    budget_was, budget_now = saved.get("time_budget_minutes"), cfg.time_budget_minutes
    if budget_was and budget_now and budget_was != budget_now:
        # the budget's plan (its step count, the corrections made) is in the checkpoint: another number of minutes
        # would be silently ignored
        raise field_error(lambda n: f"run folder {path.parent} was planned for {n('time_budget_minutes')} "
                                    f"{budget_was:g}, not {budget_now:g}; a budget cannot change on resume: rerun "
                                    f"with {budget_was:g}, or set the length with {n('epochs')} N "
                                    f"{n('time_budget_minutes')} 0, or choose a new {n('out')}")


def schedule_changes(saved: dict, cfg) -> list[str]:
    """What a resume changes in the learning-rate schedule (said on the run's first line)."""
    changes = []
    for key in ("epochs", "time_budget_minutes", "warmup_epochs", "final_lr_ratio", "lr_weights", "lr_biases"):
        was, now = saved.get(key), getattr(cfg, key)
        if key in saved and was != now:
            changes.append(f"--{key.replace('_', '-')} {was} -> {now}")
    return changes
