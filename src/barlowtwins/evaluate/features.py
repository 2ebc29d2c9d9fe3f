"""Frozen-backbone feature extraction, once per data set, on one process or sharded over ranks.

Evaluation input is the standard one: in-memory data sets are only normalised (resized when the network was
trained at another size); folders are resized to ``image_size / 0.875`` and centre-cropped (Resize(256) +
CenterCrop(224) at 224). Under torch.distributed every rank encodes its shard and the features are gathered
back in data set order: no sample counted twice, none dropped.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms import v2 as T

from barlowtwins.data.datasets import is_in_memory
from barlowtwins.data.sampling import BatchStream
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.console import terminal_bar
from barlowtwins.runtime.files import describe_os_error, save_atomic
from barlowtwins.runtime.hardware import autocast
from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD
from barlowtwins.transforms.tensor import to_float_rgb
from barlowtwins.weights.run_files import load_checkpoint


def eval_transform(image_size: int, crop_ratio: float = 0.875) -> T.Compose:
    """Resize the shorter side to ``image_size / crop_ratio`` and centre-crop: uint8 (3, S, S) tensors."""
    return T.Compose([T.ToImage(), T.RGB(), T.Resize(round(image_size / crop_ratio), antialias=True),
                      T.CenterCrop(image_size)])


def normalize(x: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8/float (B, 1|3, H, W) -> normalised float (B, 3, H, W)."""
    x = to_float_rgb(x)
    m = torch.tensor(list(mean) * (3 if len(mean) == 1 else 1), device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(list(std) * (3 if len(std) == 1 else 1), device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def prepare_batch(images: torch.Tensor, image_size: int, device: torch.device, mean=IMAGENET_MEAN,
                  std=IMAGENET_STD, channels_last: bool = True) -> torch.Tensor:
    """A loader batch -> the network's normalised input at ``image_size`` on ``device``."""
    x = normalize(images.to(device, non_blocking=True), mean, std)
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
    if channels_last and device.type != "mps":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, dataset, *, image_size: int, device: torch.device,
                     batch_size: int = 256, amp_dtype: torch.dtype | None = None, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, mirror: bool = False, workers: int | None = None,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) float32 features and (N,) labels of ``dataset`` in its order, on the CPU.

    ``mirror=True`` encodes the horizontally flipped images instead (extra training samples for a probe).
    The backbone is put in eval mode (BN running statistics) and back in its previous mode afterwards.
    """
    was_training = backbone.training
    backbone.eval()
    stream = BatchStream(dataset, batch_size, shuffle=False, drop_last=False, rank=D.rank(),
                         world_size=D.world_size(), transform=None if is_in_memory(dataset)
                         else eval_transform(image_size), workers=workers, pin_memory=device.type == "cuda")
    feats, labels, indices = [], [], []
    batches = stream.epoch(0)
    if progress and D.is_main_process():
        batches = terminal_bar(batches, total=len(stream), desc="features", unit="batch", leave=False)
    for images, y, idx in batches:
        x = prepare_batch(images, image_size, device, mean, std)
        if mirror:
            x = torch.flip(x, dims=[3])
        with autocast(device, amp_dtype):
            f = backbone(x).float()
        feats.append(f)
        labels.append(torch.as_tensor(y).to(device))
        indices.append(torch.as_tensor(idx).to(device))
    backbone.train(was_training)
    f = torch.cat(feats)
    y = torch.cat(labels)
    idx = torch.cat(indices)
    if D.world_size() > 1:
        total = len(dataset)
        f = D.gather_by_index(f, idx, total)
        y = D.gather_by_index(y, idx, total)
    else:
        order = torch.argsort(idx)
        f, y = f[order], y[order]
    return f.cpu(), y.cpu()


def cached_features(backbone: torch.nn.Module, dataset, *, key: dict, cache_dir=None, mirror: bool = False,
                    **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`extract_features`, reusing an earlier extraction of the same thing from ``cache_dir`` when there is one.

    ``key`` names what was extracted (checkpoint hash, data set, split, image size, normalisation); the file is
    ``features-<dataset>-<split>[-mirror]-<hash of key>.pt`` (float32 features, int64 labels), written atomically
    by rank 0. Without ``cache_dir`` this is plain `extract_features`.
    """
    if cache_dir is None:
        return extract_features(backbone, dataset, mirror=mirror, **kwargs)
    # Everything the features depend on besides the weights: which images (the data folder and a fingerprint of
    # the files or pixels), how they are prepared, and the precision they are encoded in.
    key = {**key, "mirror": mirror, "n": len(dataset), "data": _data_fingerprint(dataset),
           **{k: kwargs[k] for k in ("image_size", "mean", "std") if k in kwargs},
           "precision": str(kwargs.get("amp_dtype"))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"features-{key.get('dataset')}-{key.get('split')}{'-mirror' if mirror else ''}-{digest}.pt"
    if path.is_file():
        cached = load_checkpoint(path)
        if cached.get("key") == json.loads(json.dumps(key, default=str)) and len(cached["labels"]) == len(dataset):
            if kwargs.get("progress") and D.is_main_process():
                print(f"reusing features from {path}")
            # The labels are the data set's own, not the cached ones: features do not depend on them, and an
            # evaluation may number the classes differently from the one that wrote the cache (one class map
            # per evaluation, see `barlowtwins.data.datasets.align_classes`).
            return cached["features"].float(), _labels_of(dataset, cached["labels"])
    feats, labels = extract_features(backbone, dataset, mirror=mirror, **kwargs)
    if D.is_main_process():
        try:
            save_atomic({"features": feats.float(), "labels": labels,
                         "key": json.loads(json.dumps(key, default=str))}, path)
        except OSError as e:  # a read-only run folder, a full disk: the evaluation goes on without the cache
            print(f"warning: features not cached ({describe_os_error(e)}); pass --cache-dir DIR or --no-cache",
                  file=sys.stderr)
    return feats, labels


def _labels_of(dataset, fallback: torch.Tensor) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor) and labels.shape == fallback.shape:
        return labels.to(torch.int64).clone()
    return fallback


def _data_fingerprint(dataset) -> dict:
    """The data set's folder and a hash of its file list (folders) or pixels (in memory)."""
    h = hashlib.sha256()
    files = getattr(dataset, "files", None)
    if files is not None:
        h.update("\n".join(map(str, files)).encode())
    elif isinstance(getattr(dataset, "images", None), torch.Tensor):
        h.update(dataset.images.contiguous().numpy().tobytes())
    return {"name": str(getattr(dataset, "name", "")), "sha256": h.hexdigest()[:16]}
