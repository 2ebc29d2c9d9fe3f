"""The evaluation protocols as functions of (backbone, train set, test set).

`knn_protocol`, `linear_protocol` (fast or paper; ``linear`` and ``transfer``), `svm_protocol` (VOC07) and
`finetune_protocol` each return an `EvalResult` (metrics plus the record's other fields); the commands only
write and print it.

The linear protocols are entries of `LINEAR_PROTOCOLS` (name -> function, default epochs, description); each
function takes ``(setup, train, val, names, options: LinearOptions)`` and returns ``(metrics, hyperparameters)``.
``fast`` and ``paper`` wrap `linear_fast` and `linear_paper`; `register_linear_protocol` adds one, and
``barlowtwins linear --protocol`` (and ``transfer``) offer every entry.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from barlowtwins.data.bad_files import collect_bad_files
from barlowtwins.data.datasets import ClassAlignment, align_classes
from barlowtwins.evaluate.backbone import EvalSetup
from barlowtwins.evaluate.classifier import ClassifierRun, assert_unchanged, new_linear_head, snapshot, train_classifier
from barlowtwins.evaluate.knn import knn_evaluate
from barlowtwins.evaluate.linear import DEFAULT_LRS, DEFAULT_WDS, fast_linear_probe
from barlowtwins.evaluate.results import EvalResult
from barlowtwins.evaluate.svm import voc07_svm_map
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.log import get_logger
from barlowtwins.runtime.registry import Registry

log = get_logger(__name__)


def _result(setup: EvalSetup, protocol: str, names: tuple[str, str, str], metrics: dict, hyper: dict, t0: float,
            alignment: ClassAlignment | None = None, **counts) -> EvalResult:
    """names = (data set, train split, test split)."""
    classes = alignment.to_record() if alignment is not None and alignment.classes else {}
    return EvalResult(protocol, names[0], names[2], metrics, hyper, train_split=names[1],
                      seconds=time.time() - t0, extra={**counts, **setup.describe(), **classes})


def counts_bad_files(protocol):
    """A protocol whose `EvalResult` lists the unreadable files skipped while it ran (each once)."""
    @functools.wraps(protocol)
    def wrapper(*args, **kwargs) -> EvalResult:
        with collect_bad_files() as bad:
            result = protocol(*args, **kwargs)
        result.skipped = bad.as_list()
        return result
    return wrapper


def aligned(train, val, names: tuple[str, str, str]):
    """``(val on the training split's class numbering, ClassAlignment)``; each mismatch is one warning line on
    stderr (see `barlowtwins.data.datasets.align_classes`)."""
    val, alignment = align_classes(train, val, names[1], names[2])
    if D.is_main_process():
        for line in alignment.warnings():
            log.warning(f"warning: {line}")
    return val, alignment


def _num_classes(train, *labels: torch.Tensor) -> int:
    """The width of a classifier: the class map's size, or the largest label + 1 for data without class names."""
    return max([len(getattr(train, "classes", None) or [])] + [int(y.max()) + 1 for y in labels if len(y)])


@counts_bad_files
def knn_protocol(setup: EvalSetup, train, val, *, names: tuple[str, str, str], k=(20, 200),
                 temperature: float = 0.07, batch_size: int = 256, workers: int | None = None) -> EvalResult:
    """Weighted kNN on frozen, L2-normalised features; metrics per k: ``{"k=20": {"top1", "top5"}, ...}``."""

    t0 = time.time()
    val, alignment = aligned(train, val, names)
    kw: dict[str, Any] = dict(batch_size=batch_size, workers=workers)
    ftr, ytr = setup.features(train, names[0], names[1], **kw)
    fte, yte = setup.features(val, names[0], names[2], **kw)
    metrics = knn_evaluate(ftr, ytr, fte, yte, _num_classes(train, ytr, yte), tuple(k), temperature, setup.device)
    return _result(setup, "knn", names, metrics, {"k": list(k), "temperature": temperature}, t0, alignment,
                   num_train=int((ytr >= 0).sum()), num_test=len(yte))


@dataclass(frozen=True)
class LinearOptions:
    """The settings of a linear protocol run; each protocol reads those it uses (``epochs`` is resolved: the
    caller's, else the protocol's default)."""

    epochs: int
    batch_size: int = 256
    lr: float = 0.3
    weight_decay: float = 1e-6
    lrs: tuple[float, ...] | list[float] | None = None  # fast: the grid (None: its default)
    wds: tuple[float, ...] | list[float] | None = None
    holdout: float = 0.1
    flip: bool = False
    seed: int = 0
    workers: int | None = None


@dataclass(frozen=True)
class LinearProtocol:
    """A linear protocol by name: ``run(setup, train, val, names, options)`` returns ``(metrics, hyperparameters)``;
    ``epochs`` is its default length; ``description`` is one line for ``--help``."""

    name: str
    run: Callable
    epochs: int
    description: str


LINEAR_PROTOCOLS: Registry[LinearProtocol] = Registry("linear protocol")
register_linear_protocol = LINEAR_PROTOCOLS.register  # a new protocol: one LinearProtocol registered here


def _fast(setup: EvalSetup, train, val, names: tuple[str, str, str], o: LinearOptions):
    return linear_fast(setup, train, val, names=names, epochs=o.epochs, lrs=o.lrs, wds=o.wds, holdout=o.holdout,
                       flip=o.flip, seed=o.seed, batch_size=o.batch_size, workers=o.workers)


def _paper(setup: EvalSetup, train, val, names: tuple[str, str, str], o: LinearOptions):
    return linear_paper(setup, train, val, epochs=o.epochs, batch_size=o.batch_size, lr=o.lr,
                        weight_decay=o.weight_decay, seed=o.seed, workers=o.workers)


for _spec in (
    LinearProtocol("fast", _fast, 50, "features extracted once (cached) and a grid of linear classifiers "
                                      "(lr x weight decay) trained on them at once; the best on a held-out share of "
                                      "the training set is retrained and tested"),
    LinearProtocol("paper", _paper, 100, "the official protocol: frozen backbone in eval mode, RandomResizedCrop "
                                         "and flip, SGD momentum 0.9, lr x batch/256, cosine"),
):
    register_linear_protocol(_spec)


def linear_protocol_spec(name: str) -> LinearProtocol:
    """The registry entry of ``name``, with a one-line error listing the valid names."""
    return LINEAR_PROTOCOLS.lookup(name)


@counts_bad_files
def linear_protocol(setup: EvalSetup, train, val, *, names: tuple[str, str, str], protocol: str = "fast",
                    prefix: str = "linear", epochs: int | None = None, batch_size: int = 256, lr: float = 0.3,
                    weight_decay: float = 1e-6, lrs=None, wds=None, holdout: float = 0.1, flip: bool = False,
                    seed: int = 0, workers: int | None = None, counts: bool = False) -> EvalResult:
    """A linear protocol of `LINEAR_PROTOCOLS` (``fast``: `linear_fast`, default 50 epochs; ``paper``:
    `linear_paper`, default 100) as a result named ``<prefix>-<protocol>``.

    ``counts=True`` adds ``num_train``/``num_test`` to the record (the transfer commands report them). ``val`` is
    numbered by the training split's classes before the protocol runs (`aligned`).
    """
    spec = linear_protocol_spec(protocol)
    t0 = time.time()
    val, alignment = aligned(train, val, names)
    options = LinearOptions(epochs=epochs or spec.epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                            lrs=lrs, wds=wds, holdout=holdout, flip=flip, seed=seed, workers=workers)
    metrics, hyper = spec.run(setup, train, val, names, options)
    extra = {"num_train": len(train), "num_test": len(val)} if counts else {}
    return _result(setup, f"{prefix}-{protocol}", names, metrics, hyper, t0, alignment, **extra)


@counts_bad_files
def svm_protocol(setup: EvalSetup, train, val, *, names: tuple[str, str, str], batch_size: int = 256,
                 workers: int | None = None) -> EvalResult:
    """VOC07: per-class linear SVMs on L2-normalised frozen features (cost by 3-fold CV), mAP on the test split."""

    t0 = time.time()
    kw: dict[str, Any] = dict(batch_size=batch_size, workers=workers)
    ftr, _, ktr = setup.features_kept(train, names[0], names[1], **kw)
    fte, _, kte = setup.features_kept(val, names[0], names[2], **kw)
    res = voc07_svm_map(ftr, _rows(train.targets, ktr), fte, _rows(val.targets, kte), device=setup.device)
    hyper = {"classifier": "linear SVM per class (squared hinge, positive weight 2)", "cv_folds": 3,
             "chosen_costs": res["costs"], "per_class_AP": res["per_class_AP"], "features": "L2-normalised"}
    return _result(setup, "transfer-svm", names, {"mAP": res["mAP"]}, hyper, t0, num_train=len(train),
                   num_test=len(val))


def _rows(targets, kept: torch.Tensor):
    """The targets of the kept samples (the rows of unreadable files left out, as their features are)."""
    if len(kept) == len(targets):
        return targets
    return targets[kept.numpy()] if hasattr(targets, "shape") else [targets[i] for i in kept.tolist()]


@counts_bad_files
def finetune_protocol(setup: EvalSetup, subset, val, *, names: tuple[str, str, str], num_classes: int,
                      train_percent: float, subset_description: str, epochs: int = 20, batch_size: int = 256,
                      lr_backbone: float = 0.005, lr_head: float = 0.5, weight_decay: float = 0.0,
                      schedule: str = "cosine", milestones=(12, 16), seed: int = 0, workers: int | None = None,
                      log=print) -> EvalResult:
    """Semi-supervised fine-tuning of backbone + a new linear head on ``subset`` (learning rates x batch/256);
    ``val`` is numbered by the subset's classes (`aligned`)."""

    val, alignment = aligned(subset, val, names)
    head = new_linear_head(setup.backbone_features, num_classes).to(setup.device)
    scale = batch_size / 256
    groups = [{"params": list(head.parameters()), "lr": lr_head * scale},
              {"params": list(setup.backbone.parameters()), "lr": lr_backbone * scale}]
    run = ClassifierRun(epochs=epochs, batch_size=batch_size, image_size=setup.image_size, device=setup.device,
                        amp_dtype=setup.amp_dtype, mean=setup.mean, std=setup.std, schedule=schedule,
                        milestones=tuple(milestones), workers=workers, seed=seed,
                        log=(lambda r: log(f"epoch {r['epoch']}: top-1 {r['val_top1']:.2f} top-5 {r['val_top5']:.2f} "
                                           f"loss {r['train_loss']:.3f}")) if log else None)
    t0 = time.time()
    res = train_classifier(setup.backbone, head, subset, val, groups, run, freeze_backbone=False,
                           weight_decay=weight_decay)
    hyper = {"train_percent": train_percent, "subset": subset_description, "num_train": len(subset),
             "epochs": epochs, "batch_size": batch_size, "lr_backbone": lr_backbone * scale,
             "lr_head": lr_head * scale, "weight_decay": weight_decay, "schedule": schedule,
             "milestones": list(milestones) if schedule == "step" else None, "history": run.history}
    return _result(setup, "finetune", names, {"last": res["last"], "best": res["best"]}, hyper, t0, alignment)


def linear_fast(setup: EvalSetup, train, val, *, names: tuple[str, str, str], epochs: int = 50, lrs=None,
                wds=None, holdout: float = 0.1, flip: bool = False, seed: int = 0, batch_size: int = 256,
                workers: int | None = None):
    """Cached features + a (lr x wd) grid of linear classifiers trained at once (see `linear.fast_linear_probe`).

    ``names`` = (data set, train split, test split), which name the feature cache entries.
    """

    kw: dict[str, Any] = dict(batch_size=batch_size, workers=workers)
    ftr, ytr = setup.features(train, names[0], names[1], **kw)
    fte, yte = setup.features(val, names[0], names[2], **kw)
    groups = None
    if flip:
        mirrored, _ = setup.features(train, names[0], names[1], mirror=True, **kw)
        groups = torch.arange(len(ytr)).repeat(2)
        ftr, ytr = torch.cat([ftr, mirrored]), torch.cat([ytr, ytr])
    num_classes = _num_classes(train, ytr, yte)
    res = fast_linear_probe(ftr, ytr, fte, yte, num_classes, lrs=lrs or DEFAULT_LRS, wds=wds or DEFAULT_WDS,
                            epochs=epochs, holdout=holdout, seed=seed, device=setup.device, train_groups=groups)
    hyper = {"epochs": epochs, "lr": res.lr, "weight_decay": res.weight_decay, "holdout": holdout,
             "holdout_top1": res.holdout_top1, "flip": flip, "grid": res.grid}
    return {"top1": res.top1, "top5": res.top5}, hyper


def linear_paper(setup: EvalSetup, train, val, *, epochs: int = 100, batch_size: int = 256, lr: float = 0.3,
                 weight_decay: float = 1e-6, seed: int = 0, workers: int | None = None, log=print):
    """The official linear protocol; raises if the backbone changed in any way during training."""

    num_classes = max(train.num_classes, val.num_classes)
    head = new_linear_head(setup.backbone_features, num_classes).to(setup.device)
    setup.backbone.requires_grad_(False)
    before = snapshot(setup.backbone)
    scaled_lr = lr * batch_size / 256
    run = ClassifierRun(epochs=epochs, batch_size=batch_size, image_size=setup.image_size, device=setup.device,
                        amp_dtype=setup.amp_dtype, mean=setup.mean, std=setup.std, workers=workers, seed=seed,
                        log=(lambda r: log(f"epoch {r['epoch']}: top-1 {r['val_top1']:.2f} top-5 {r['val_top5']:.2f} "
                                           f"loss {r['train_loss']:.3f}")) if log else None)
    res = train_classifier(setup.backbone, head, train, val, [{"params": head.parameters(), "lr": scaled_lr}], run,
                           freeze_backbone=True, weight_decay=weight_decay)
    assert_unchanged(setup.backbone, before)
    hyper = {"epochs": epochs, "batch_size": batch_size, "lr": scaled_lr, "weight_decay": weight_decay,
             "momentum": 0.9, "schedule": "cosine", "history": run.history, "backbone_unchanged": True}
    return {"last": res["last"], "best": res["best"]}, hyper
