"""Training a classifier on images: the paper's linear protocol (frozen backbone) and semi-supervised
fine-tuning (whole network) share this loop, as they do in the official ``evaluate.py``.

Train views are RandomResizedCrop + horizontal flip; validation is the centre crop. SGD with momentum 0.9, the
learning rate follows a per-epoch cosine (or steps x0.2 at given epochs). Under torch.distributed every rank
trains on its shard with DDP and validation logits are gathered by index.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2 as T

from barlowtwins.data.bad_files import ReadableBatches, skipped_indices
from barlowtwins.data.datasets import is_in_memory
from barlowtwins.errors import DataError
from barlowtwins.evaluate.features import eval_transform, normalize, prepare_batch
from barlowtwins.evaluate.knn import topk_accuracy
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.console import terminal_bar
from barlowtwins.runtime.hardware import autocast
from barlowtwins.runtime.memory_format import as_input_format, is_channels_last
from barlowtwins.runtime.placement import per_rank_batch, place_model
from barlowtwins.transforms.params import generator_uniforms, params_from_uniforms
from barlowtwins.transforms.spec import augment_config, run_ops
from barlowtwins.transforms.tensor import OPS, to_float_rgb


@dataclass
class ClassifierRun:
    """What the loop needs besides the network and the data."""

    epochs: int
    batch_size: int  # global
    image_size: int
    device: torch.device
    amp_dtype: torch.dtype | None = None
    mean: tuple = (0.485, 0.456, 0.406)
    std: tuple = (0.229, 0.224, 0.225)
    schedule: str = "cosine"  # cosine | step
    milestones: tuple[int, ...] = (12, 16)
    gamma: float = 0.2
    crop_scale: tuple[float, float] = (0.08, 1.0)
    workers: int | None = None
    seed: int = 0
    progress: bool = True
    log: Callable[[dict], None] | None = None
    history: list[dict] = field(default_factory=list)


def train_transform(image_size: int, crop_scale=(0.08, 1.0)) -> T.Compose:
    """RandomResizedCrop + flip of one image file, to a uint8 (3, S, S) tensor."""
    return T.Compose([T.ToImage(), T.RGB(), T.RandomResizedCrop(image_size, scale=crop_scale, antialias=True),
                      T.RandomHorizontalFlip()])


def _train_batch(images, run: ClassifierRun, in_memory: bool, g: torch.Generator,
                 channels_last: bool = True) -> torch.Tensor:
    if not in_memory:  # already cropped in the workers
        return prepare_batch(images, run.image_size, run.device, run.mean, run.std, channels_last=channels_last)
    x = to_float_rgb(images.to(run.device, non_blocking=True))  # (B, 3, H, W) in [0, 1]
    n, _, h, w = x.shape
    # The crop and flip of the pretraining views (their parameters and ops), bilinear as the linear protocol's.
    aug = augment_config(run.image_size, crop_scale=run.crop_scale, interpolation="bilinear")
    p = params_from_uniforms(generator_uniforms(g, n, k=aug.spec.num_uniforms), aug, 0, h, w, ops=("crop", "flip"))
    x = normalize(run_ops(OPS, x, p, aug, kind="geometry"), run.mean, run.std)
    return as_input_format(x, channels_last and run.device.type != "mps")


def lr_factor(run: ClassifierRun, epoch: int) -> float:
    """Per-epoch factor of the base learning rates (CosineAnnealingLR over the epochs, or steps)."""
    if run.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * epoch / run.epochs))
    if run.schedule == "step":
        return run.gamma ** sum(epoch >= m for m in run.milestones)
    raise ValueError(f"unknown schedule '{run.schedule}'; choose cosine or step")


@torch.no_grad()
def evaluate_classifier(backbone: nn.Module, head: nn.Module, dataset, run: ClassifierRun,
                        batch_size: int = 256) -> dict:
    """top-1 / top-5 of backbone + head on ``dataset`` (centre crop), every sample counted once."""
    backbone_mode, head_mode = backbone.training, head.training
    backbone.eval()
    head.eval()
    stream = ReadableBatches(dataset, batch_size, shuffle=False, rank=D.rank(), world_size=D.world_size(),
                             workers=run.workers, pin_memory=run.device.type == "cuda",
                             transform=None if is_in_memory(dataset) else eval_transform(run.image_size))
    logits, labels, indices = [], [], []
    for images, y, idx in stream.epoch(0):
        x = prepare_batch(images, run.image_size, run.device, run.mean, run.std,
                          channels_last=is_channels_last(backbone))
        with autocast(run.device, run.amp_dtype):
            logits.append(head(backbone(x)).float())
        labels.append(torch.as_tensor(y).to(run.device))
        indices.append(torch.as_tensor(idx).to(run.device))
    if D.world_size() > 1:
        # A skipped sample: a flagged row, so that every index is accounted for; flagged rows are left out.
        bad = skipped_indices(stream.skipped).to(run.device)
        # the ignore: torch types an nn.Module's undeclared attributes as Tensor | Module (a linear head's is an int)
        width = logits[0].shape[1] if logits else int(head.out_features)  # type: ignore[arg-type]
        out = torch.cat(logits + [torch.zeros(len(bad), width, device=run.device)])
        y = torch.cat(labels + [torch.full((len(bad),), -1, dtype=torch.int64, device=run.device)])
        ok = torch.cat([torch.ones(len(i), dtype=torch.uint8, device=run.device) for i in indices]
                       + [torch.zeros(len(bad), dtype=torch.uint8, device=run.device)])
        idx = torch.cat(indices + [bad])
        ok = D.gather_by_index(ok, idx, len(dataset)).bool()
        out = D.gather_by_index(out, idx, len(dataset))[ok]
        y = D.gather_by_index(y.to(torch.int64), idx, len(dataset))[ok]
    else:
        if not logits:
            raise DataError("none of the image files of the evaluation split can be read; check that they are images")
        out, y = torch.cat(logits), torch.cat(labels)
    backbone.train(backbone_mode)
    head.train(head_mode)
    return topk_accuracy(out.cpu(), y.cpu())


def train_classifier(backbone: nn.Module, head: nn.Module, train_set, val_set, param_groups: list[dict],
                     run: ClassifierRun, *, freeze_backbone: bool, weight_decay: float) -> dict:
    """SGD over ``train_set`` for ``run.epochs``; validation every epoch. Returns last/best top-1/top-5."""
    world = D.world_size()
    per_rank = per_rank_batch(run.batch_size, world)
    in_memory = is_in_memory(train_set)
    stream = ReadableBatches(train_set, per_rank, shuffle=True, seed=run.seed, rank=D.rank(),
                             world_size=world, workers=run.workers, pin_memory=run.device.type == "cuda",
                             transform=None if in_memory else train_transform(run.image_size, run.crop_scale),
                             lockstep_device=run.device)
    if len(stream) == 0:
        raise ValueError("the training set is empty")
    for group in param_groups:
        group.setdefault("base_lr", group["lr"])
    optimizer = torch.optim.SGD(param_groups, lr=0.0, momentum=0.9, weight_decay=weight_decay)
    trainable = head if freeze_backbone else nn.Sequential(backbone, head)
    model = place_model(trainable, run.device, world=world).called  # DDP under a process group

    def forward(x):
        if freeze_backbone:
            with torch.no_grad():
                with autocast(run.device, run.amp_dtype):
                    feats = backbone(x)
            return model(feats.float())
        with autocast(run.device, run.amp_dtype):
            return model(x)

    best = {"top1": -1.0, "top5": -1.0, "epoch": -1}
    bar = None
    if run.progress and D.is_main_process():
        bar = terminal_bar(total=run.epochs * len(stream), unit="step", desc="classifier")
    step = 0
    for epoch in range(run.epochs):
        factor = lr_factor(run, epoch)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        if freeze_backbone:
            backbone.eval()  # BN statistics stay as pretrained
            head.train()
        else:
            backbone.train()
            head.train()
        t0, loss_sum, seen = time.time(), torch.zeros((), device=run.device), 0
        for images, y, _ in stream.epoch(epoch):
            g = torch.Generator().manual_seed((run.seed * 1_000_003 + step) * 8_191 + D.rank())
            x = _train_batch(images, run, in_memory, g, channels_last=is_channels_last(backbone))
            y = torch.as_tensor(y).to(run.device, non_blocking=True)
            logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            seen += len(y)
            step += 1
            if bar is not None:
                bar.update(1)
        acc = evaluate_classifier(backbone, head, val_set, run)
        record = {"epoch": epoch + 1, "train_loss": float(loss_sum) / max(seen, 1), "lr_factor": factor,
                  "val_top1": acc["top1"], "val_top5": acc["top5"], "epoch_seconds": time.time() - t0}
        run.history.append(record)
        if run.log is not None and D.is_main_process():
            run.log(record)
        if bar is not None:
            bar.set_postfix(top1=f"{acc['top1']:.2f}", loss=f"{record['train_loss']:.3f}")
        if acc["top1"] > best["top1"]:
            best = {**acc, "epoch": epoch + 1}
    if bar is not None:
        bar.close()
    last = run.history[-1]
    return {"last": {"top1": last["val_top1"], "top5": last["val_top5"]}, "best": best}


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer (on the CPU), to prove later that nothing changed."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Raise if any parameter or buffer (BN running statistics included) differs from ``before``."""
    changed = [k for k, v in module.state_dict().items() if not torch.equal(v.detach().cpu(), before[k])]
    if changed:
        raise RuntimeError(f"frozen-backbone check failed: {len(changed)} tensors changed during linear evaluation "
                           f"(e.g. {', '.join(changed[:3])}); the backbone must stay frozen and in eval mode")


def new_linear_head(in_features: int, num_classes: int) -> nn.Linear:
    """The official linear head: weights N(0, 0.01), bias 0."""
    head = nn.Linear(in_features, num_classes)
    head.weight.data.normal_(mean=0.0, std=0.01)
    head.bias.data.zero_()
    return head
