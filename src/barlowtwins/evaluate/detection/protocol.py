"""The detection transfer protocol: fine-tune a detector on the standard schedule, then measure AP.

Schedules (Detectron2's, as the self-supervised transfer papers use them): SGD momentum 0.9, weight decay 1e-4
(none on BN parameters), batch 16, lr 0.02 with linear warm-up from lr/1000, x0.1 at two steps:

* VOC07+12: 24k iterations, steps at 18k and 22k, 100 warm-up iterations;
* COCO 1x: 90k iterations, steps at 60k and 80k, 1000 warm-up iterations.

``iterations`` scales a schedule (steps and warm-up scale with it); the learning rate follows the batch size
linearly (0.02 per 16 images) unless given. Under torch.distributed each rank trains on its share of the batch
(DistributedSampler, DDP, synchronised BN); test images are split over the ranks and their predictions gathered
on every rank before AP is computed once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypedDict, cast

import torch
from torch import nn

from barlowtwins.data.bad_files import ItemsOrUnreadable, collect_bad_files, dropping_unreadable, note_unreadable
from barlowtwins.evaluate.detection.ap import (
    coco_detection_ap,
    detections_to_coco,
    pycocotools_ap,
    pycocotools_available,
    voc_detection_ap,
)
from barlowtwins.evaluate.detection.data import DetectionDataset, collate
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.console import terminal_bar
from barlowtwins.runtime.hardware import autocast
from barlowtwins.runtime.placement import per_rank_batch, place_model


class StandardSchedule(TypedDict):
    """A schedule of `STANDARD_SCHEDULES` before scaling: iterations, learning-rate steps, warm-up iterations."""

    iterations: int
    steps: tuple[int, ...]
    warmup: int


STANDARD_SCHEDULES: dict[str, StandardSchedule] = {
    "voc": dict(iterations=24_000, steps=(18_000, 22_000), warmup=100),
    "coco": dict(iterations=90_000, steps=(60_000, 80_000), warmup=1_000),
}
BASE_BATCH, BASE_LR = 16, 0.02


@dataclass
class DetectionSchedule:
    """Iterations, batch and a step learning rate with linear warm-up (iteration-indexed)."""

    iterations: int
    batch_size: int = BASE_BATCH  # global
    lr: float = BASE_LR
    steps: tuple[int, ...] = ()
    warmup_iters: int = 0
    warmup_factor: float = 0.001
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4

    def lr_at(self, it: int) -> float:
        """Learning rate of iteration ``it`` (0-based): warm-up ramp, then x``gamma`` at every step passed."""
        lr = self.lr * self.gamma ** sum(it >= s for s in self.steps)
        if it < self.warmup_iters:
            alpha = it / self.warmup_iters
            lr *= self.warmup_factor * (1 - alpha) + alpha
        return lr


def standard_schedule(dataset: str, iterations: int | None = None, batch_size: int = BASE_BATCH,
                      lr: float | None = None) -> DetectionSchedule:
    """The standard schedule of ``dataset`` (``voc`` or ``coco``), scaled to ``iterations`` when given."""
    base = STANDARD_SCHEDULES[dataset]
    n = int(iterations) if iterations is not None else base["iterations"]
    scale = n / base["iterations"]
    steps = tuple(s for s in (max(1, round(s * scale)) for s in base["steps"]) if s < n)
    warmup = min(n, max(1, round(base["warmup"] * scale)))
    return DetectionSchedule(iterations=n, batch_size=batch_size,
                             lr=lr if lr is not None else BASE_LR * batch_size / BASE_BATCH,
                             steps=steps, warmup_iters=warmup)


@dataclass
class DetectionRun:
    """What the loop needs besides the detector and the data."""

    schedule: DetectionSchedule
    device: torch.device
    amp_dtype: torch.dtype | None = None
    workers: int = 0
    seed: int = 0
    log_every: int = 20
    progress: bool = True
    log: Callable[[dict], None] | None = None
    history: list[dict] = field(default_factory=list)


@dataclass
class DetectionResult:
    """AP of the fine-tuned detector and how it was obtained."""

    metrics: dict[str, float]  # AP / AP50 / AP75 (boxes) [+ mask_AP / mask_AP50 / mask_AP75], percent
    task: str
    head: str  # c4 | fpn
    evaluation: str  # which AP: VOC protocol or COCOeval, and by which code
    schedule: DetectionSchedule
    train_set: str
    test_set: str
    num_train: int
    num_test: int
    num_classes: int
    per_class_AP50: dict[str, float] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # unreadable images left out: [{"file": ..., "reason": ...}]

    @property
    def skipped_files(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict:
        return asdict(self)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Detectron2's groups: no weight decay on normalisation parameters."""
    norm: list[nn.Parameter] = []
    other: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (norm if isinstance(module, nn.modules.batchnorm._NormBase) else other).append(p)
    return [{"params": other, "weight_decay": weight_decay}, {"params": norm, "weight_decay": 0.0}]


def _to_device(images, targets, device):
    xs = [im.to(device, non_blocking=True).float().div_(255) for im in images]  # (3, H, W) in [0, 1]
    ts = [{k: t[k].to(device, non_blocking=True) for k in ("boxes", "labels", "masks") if k in t} for t in targets]
    return xs, ts


def train_detector(model: nn.Module, train_set: DetectionDataset, run: DetectionRun) -> list[dict]:
    """SGD on ``train_set`` for ``run.schedule.iterations`` batches; returns the loss history."""
    sched = run.schedule
    world = D.world_size()
    per_rank = per_rank_batch(sched.batch_size, world)
    placed = place_model(model, run.device, world=world, sync_bn=True)  # SyncBN and DDP under a process group
    model, ddp = placed.raw, placed.called
    optimizer = torch.optim.SGD(_param_groups(model, sched.weight_decay), lr=sched.lr_at(0),
                                momentum=sched.momentum)
    sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        train_set, num_replicas=world, rank=D.rank(), shuffle=True, seed=run.seed)
    train_set.seed = run.seed

    def batches() -> Iterator[tuple[list, list]]:
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            train_set.epoch = epoch  # the flips' seed (workers get a fresh copy every epoch)
            loader = torch.utils.data.DataLoader(ItemsOrUnreadable(train_set, _file_of(train_set)),
                                                 batch_size=per_rank, sampler=sampler, num_workers=run.workers,
                                                 collate_fn=dropping_unreadable(collate),
                                                 pin_memory=run.device.type == "cuda")
            for batch, bad in loader:  # an unreadable image is dropped from its batch (and counted)
                for s in bad:
                    note_unreadable(s.file, s.reason)
                if batch is not None:  # every rank still takes the same number of steps: the stream is endless
                    yield batch
            epoch += 1

    bar = None
    if run.progress and D.is_main_process():
        bar = terminal_bar(total=sched.iterations, unit="it", desc="detection")
    model.train()
    stream = batches()
    sums: dict[str, float] = {}
    count, t0 = 0, time.time()
    for it in range(sched.iterations):
        lr = sched.lr_at(it)
        for group in optimizer.param_groups:
            group["lr"] = lr
        images, targets = _to_device(*next(stream), run.device)
        with autocast(run.device, run.amp_dtype):
            losses = ddp(images, targets)  # {"loss_classifier", "loss_box_reg", "loss_objectness", ...}
        loss = sum(v.float() for v in losses.values())
        if not torch.isfinite(loss):
            raise FloatingPointError(f"detection loss became {float(loss)} at iteration {it + 1}; "
                                     "lower --lr or check the boxes")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach())
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
        count += 1
        if bar is not None:
            bar.update(1)
        if (it + 1) % run.log_every == 0 or it + 1 == sched.iterations:
            record = {"iteration": it + 1, "lr": lr, **{k: v / count for k, v in sums.items()},
                      "seconds": time.time() - t0}
            run.history.append(record)
            if run.log is not None and D.is_main_process():
                run.log(record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.3f}")
            sums, count = {}, 0
    if bar is not None:
        bar.close()
    return run.history


@torch.no_grad()
def predict(model: nn.Module, dataset: DetectionDataset, run: DetectionRun,
            batch_size: int = 1) -> list[dict | None]:
    """Detections of every image of ``dataset``, in its order, on every rank (each rank predicts a share).

    The prediction of an image that cannot be read is None (skipped and counted, `barlowtwins.data.bad_files`).
    Each prediction holds CPU tensors ``boxes`` (D, 4) float32 xyxy in original pixels, ``scores`` (D,) float32,
    ``labels`` (D,) int64, and for Mask R-CNN ``rles``: the masks (probability > 0.5) as COCO RLE.
    """
    mode = model.training
    model.eval()
    world = D.world_size()
    sampler: torch.utils.data.DistributedSampler[int] = torch.utils.data.DistributedSampler(
        dataset, num_replicas=world, rank=D.rank(), shuffle=False)
    loader = torch.utils.data.DataLoader(ItemsOrUnreadable(dataset, _file_of(dataset)), batch_size=batch_size,
                                         sampler=sampler, num_workers=run.workers,
                                         collate_fn=dropping_unreadable(collate))
    mine: dict[int, dict | None] = {}
    why: dict[str, str] = {}
    for batch, bad in loader:
        for s in bad:  # an unreadable test image is left out of the evaluation (None here)
            mine[s.index] = None
            why[s.file] = s.reason
        if batch is None:
            continue
        images, targets = batch
        xs, _ = _to_device(images, targets, run.device)
        with autocast(run.device, run.amp_dtype):
            outputs = model(xs)
        for out, t in zip(outputs, targets):
            pred = {"boxes": out["boxes"].float().cpu(), "scores": out["scores"].float().cpu(),
                    "labels": out["labels"].cpu()}
            if "masks" in out:
                pred["rles"] = _encode_masks(out["masks"][:, 0] > 0.5)  # (D, 1, H, W) probabilities
            mine[int(t["index"])] = pred
    model.train(mode)
    if world > 1:  # padded samplers repeat a few images: the dict keeps one copy of each
        slots: list[tuple[dict[int, dict | None], dict[str, str]] | None] = [None] * world
        torch.distributed.all_gather_object(slots, (mine, why))
        parts = cast("list[tuple[dict[int, dict | None], dict[str, str]]]", slots)  # every rank filled its slot
        mine = {k: v for part, _ in parts for k, v in part.items()}
        why = {f: r for _, part in parts for f, r in part.items()}
    for f, r in why.items():
        note_unreadable(f, r)
    missing = [i for i in range(len(dataset)) if i not in mine]
    if missing:
        raise RuntimeError(f"detection evaluation: {len(missing)} test images were predicted by no rank")
    return [mine[i] for i in range(len(dataset))]


def _encode_masks(masks: torch.Tensor) -> list[dict]:
    """(D, H, W) bool -> COCO RLE dicts (``counts`` as text so that the records are JSON-able)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    arr = np.asfortranarray(masks.permute(1, 2, 0).cpu().numpy().astype(np.uint8))  # (H, W, D)
    rles = mask_utils.encode(arr)
    for r in rles:
        r["counts"] = r["counts"].decode("ascii")
    return rles


def evaluate_detections(preds: Sequence[dict | None], dataset: DetectionDataset,
                        use_07_metric: bool = True) -> tuple[dict, dict, str]:
    """(metrics, per-class AP50, description) of ``preds`` on ``dataset`` by its own protocol; an image whose
    prediction is None (it could not be read) is left out of the evaluation, its objects too."""
    kept = [i for i in range(len(dataset)) if preds[i] is not None]
    readable = cast("list[dict]", [preds[i] for i in kept])  # kept: the images with a prediction
    gts = [dataset.target(i) for i in kept]
    if dataset.coco_file is None:  # VOC
        res = voc_detection_ap(readable, gts, dataset.num_classes, use_07_metric=use_07_metric)
        per_class = {dataset.classes[c - 1]: v for c, v in res.pop("per_class_AP50").items()}
        how = ("VOC protocol as Detectron2 runs it (difficult objects ignored; "
               f"{'11-point VOC07' if use_07_metric else 'area-under-curve'} AP per class; AP = mean over "
               "IoU 0.50:0.05:0.95)")
        return res, per_class, how
    ids = [dataset.records[i].image_id for i in kept]
    if pycocotools_available():
        import contextlib
        import io

        from pycocotools.coco import COCO

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(dataset.coco_file)
        results = detections_to_coco(readable, ids, dataset.category_ids)
        metrics = pycocotools_ap(coco_gt, [{k: v for k, v in r.items() if k != "segmentation"} for r in results],
                                 "bbox", img_ids=ids)
        if dataset.masks:
            segm = pycocotools_ap(coco_gt, [r for r in results if "segmentation" in r], "segm", img_ids=ids)
            metrics.update({f"mask_{k}": v for k, v in segm.items()})
        return metrics, {}, "COCOeval (pycocotools), area all, 100 detections per image"
    metrics = coco_detection_ap(readable, gts, dataset.num_classes)
    return metrics, {}, "COCO box AP computed in PyTorch (pycocotools not installed), area all, 100 detections"


def run_detection(model: nn.Module, train_set: DetectionDataset, test_set: DetectionDataset, run: DetectionRun,
                  *, task: str, head: str, use_07_metric: bool = True) -> DetectionResult:
    """Fine-tune ``model`` on ``train_set`` and measure its AP on ``test_set``."""
    t0 = time.time()
    torch.manual_seed(run.seed)
    with collect_bad_files() as bad:
        train_detector(model, train_set, run)
        preds = predict(model, test_set, run)
    metrics, per_class, how = evaluate_detections(preds, test_set, use_07_metric) if D.is_main_process() \
        else ({}, {}, "")
    metrics, per_class, how = D.broadcast_object((metrics, per_class, how))
    if any(not math.isfinite(v) for v in metrics.values()):
        how += "; NaN: the test set has no objects of any class"
    return DetectionResult(metrics=metrics, task=task, head=head, evaluation=how, schedule=run.schedule,
                           train_set=train_set.name, test_set=test_set.name, num_train=len(train_set),
                           num_test=sum(p is not None for p in preds), num_classes=train_set.num_classes,
                           per_class_AP50=per_class, history=run.history, seconds=time.time() - t0,
                           skipped=bad.as_list())


def _file_of(dataset: DetectionDataset):
    return lambda i: str(dataset.records[i].file)
