"""Frozen-backbone feature extraction, once per data set, on one process or sharded over ranks.

Evaluation input is the standard one: in-memory data sets are only normalised (resized when the network was
trained at another size); folders are resized to ``image_size / 0.875`` and centre-cropped (Resize(256) +
CenterCrop(224) at 224). Under torch.distributed every rank encodes its shard and the features are gathered
back in data set order: no sample counted twice, none dropped.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torchvision.transforms import v2 as T

from barlowtwins.data.bad_files import ReadableBatches, collect_bad_files, file_of, note_unreadable, skipped_indices
from barlowtwins.data.datasets import is_in_memory
from barlowtwins.errors import DataError
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.console import terminal_bar
from barlowtwins.runtime.files import describe_os_error, save_atomic
from barlowtwins.runtime.hardware import autocast
from barlowtwins.runtime.log import get_logger
from barlowtwins.runtime.memory_format import as_input_format, is_channels_last
from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD
from barlowtwins.transforms.tensor import to_float_rgb
from barlowtwins.weights.run_files import load_checkpoint

log = get_logger(__name__)


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
    return as_input_format(x, channels_last and device.type != "mps")


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, dataset, *, image_size: int, device: torch.device,
                     batch_size: int = 256, amp_dtype: torch.dtype | None = None, mean=IMAGENET_MEAN,
                     std=IMAGENET_STD, mirror: bool = False, workers: int | None = None,
                     progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, F) float32 features and (N,) labels of ``dataset`` in its order, on the CPU.

    ``mirror=True`` encodes the horizontally flipped images instead (extra training samples for a probe).
    The backbone is put in eval mode (BN running statistics) and back in its previous mode afterwards.
    An unreadable image file is skipped (`barlowtwins.data.bad_files`): its row is left out of both tensors,
    so N is the number of readable samples; `extract_features_kept` also says which ones they are.
    """
    f, y, _ = extract_features_kept(backbone, dataset, image_size=image_size, device=device,
                                    batch_size=batch_size, amp_dtype=amp_dtype, mean=mean, std=std,
                                    mirror=mirror, workers=workers, progress=progress)
    return f, y


@torch.no_grad()
def extract_features_kept(backbone: torch.nn.Module, dataset, *, image_size: int, device: torch.device,
                          batch_size: int = 256, amp_dtype: torch.dtype | None = None, mean=IMAGENET_MEAN,
                          std=IMAGENET_STD, mirror: bool = False, workers: int | None = None,
                          progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`extract_features` plus the (N,) data set indices of the rows (every index but the skipped files')."""
    was_training = backbone.training
    backbone.eval()
    stream = ReadableBatches(dataset, batch_size, shuffle=False, rank=D.rank(), world_size=D.world_size(),
                             transform=None if is_in_memory(dataset) else eval_transform(image_size),
                             workers=workers, pin_memory=device.type == "cuda")
    feats, labels, indices = [], [], []
    batches = stream.epoch(0)
    if progress and D.is_main_process():
        batches = terminal_bar(batches, total=len(stream), desc="features", unit="batch", leave=False)
    for images, y, idx in batches:
        x = prepare_batch(images, image_size, device, mean, std, channels_last=is_channels_last(backbone))
        if mirror:
            x = torch.flip(x, dims=[3])
        with autocast(device, amp_dtype):
            f = backbone(x).float()
        feats.append(f)
        labels.append(torch.as_tensor(y).to(device))
        indices.append(torch.as_tensor(idx).to(device))
    backbone.train(was_training)
    total = len(dataset)
    bad = skipped_indices(stream.skipped).to(device)
    if D.world_size() > 1:
        _share_skipped(stream.skipped)
    if not feats and D.world_size() == 1:
        raise DataError(f"none of the {total} image files of {getattr(dataset, 'name', '') or 'the data set'} "
                        "can be read (e.g. " f"{file_of(dataset, 0)}); check that they are images")
    width = feats[0].shape[1] if feats else int(getattr(backbone, "num_features", 1))
    # A skipped sample has a row of zeros flagged as not kept, so that every index is accounted for on some rank
    # and the rows stay in data set order; the flagged rows are then left out.
    f = torch.cat(feats + [torch.zeros(len(bad), width, device=device)])
    y = torch.cat(labels + [torch.full((len(bad),), -1, dtype=torch.int64, device=device)])
    ok = torch.cat([torch.ones(len(i), dtype=torch.bool, device=device) for i in indices]
                   + [torch.zeros(len(bad), dtype=torch.bool, device=device)])
    idx = torch.cat(indices + [bad])
    if D.world_size() > 1:
        f = D.gather_by_index(f, idx, total)
        y = D.gather_by_index(y.to(torch.int64), idx, total)
        ok = D.gather_by_index(ok.to(torch.uint8), idx, total).bool()
        order = torch.arange(total, device=device)
    else:
        order = torch.argsort(idx)
        f, y, ok, order = f[order], y[order], ok[order], idx[order]
    if not bool(ok.any()):
        raise DataError(f"none of the {total} image files of {getattr(dataset, 'name', '') or 'the data set'} "
                        "can be read (e.g. " f"{file_of(dataset, 0)}); check that they are images")
    return f[ok].cpu(), y[ok].to(torch.int64).cpu(), order[ok].cpu()


def _share_skipped(skipped) -> None:
    """Under torch.distributed: every rank counts the files any rank skipped (each rank reads its own shard)."""
    everyone: list[list[tuple] | None] = [None] * D.world_size()
    dist.all_gather_object(everyone, [tuple(s) for s in skipped])
    for part in everyone:
        for s in part or []:
            note_unreadable(s[1], s[2])


def cached_features(backbone: torch.nn.Module, dataset, *, key: dict, cache_dir=None, mirror: bool = False,
                    **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """`cached_features_kept` without the indices of the rows."""
    f, y, _ = cached_features_kept(backbone, dataset, key=key, cache_dir=cache_dir, mirror=mirror, **kwargs)
    return f, y


def cached_features_kept(backbone: torch.nn.Module, dataset, *, key: dict, cache_dir=None, mirror: bool = False,
                         **kwargs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`extract_features`, reusing an earlier extraction of the same thing from ``cache_dir`` when there is one.

    ``key`` names what was extracted (checkpoint hash, data set, split, image size, normalisation); the file is
    ``features-<dataset>-<split>[-mirror]-<hash of key>.pt`` (float32 features, int64 labels, the kept indices and
    the skipped files), written atomically by rank 0. Without ``cache_dir`` this is plain `extract_features_kept`.
    Returns features, labels and the data set index of each row (unreadable files are left out).
    """
    if cache_dir is None:
        return extract_features_kept(backbone, dataset, mirror=mirror, **kwargs)
    # Everything the features depend on besides the weights: which images (the data folder and a fingerprint of
    # the files or pixels), how they are prepared, and the precision they are encoded in.
    key = {**key, "mirror": mirror, "n": len(dataset), "data": _data_fingerprint(dataset),
           **{k: kwargs[k] for k in ("image_size", "mean", "std") if k in kwargs},
           "precision": str(kwargs.get("amp_dtype"))}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / (f"features-{key.get('dataset')}-{key.get('split')}{'-mirror' if mirror else ''}"
                              f"-{digest}.pt")
    if path.is_file():
        cached = load_checkpoint(path)
        skipped = cached.get("skipped") or []
        kept = cached.get("kept")
        if (cached.get("key") == json.loads(json.dumps(key, default=str))
                and len(cached["labels"]) == len(dataset) - len(skipped)):
            if kwargs.get("progress") and D.is_main_process():
                log.info(f"reusing features from {path}")
            for s in skipped:  # the files skipped when the cache was written are skipped (and counted) again
                note_unreadable(s["file"], s["reason"])
            # The labels are the data set's own, not the cached ones: features do not depend on them, and an
            # evaluation may number the classes differently from the one that wrote the cache (one class map
            # per evaluation, see `barlowtwins.data.datasets.align_classes`).
            if kept is None or len(kept) != len(cached["labels"]):
                kept = torch.arange(len(cached["labels"]))
            return cached["features"].float(), _labels_of(dataset, cached["labels"], kept), kept
    with collect_bad_files() as bad:
        feats, labels, kept = extract_features_kept(backbone, dataset, mirror=mirror, **kwargs)
    for s in bad.as_list():  # on to the caller's collector
        note_unreadable(s["file"], s["reason"])
    if D.is_main_process():
        try:
            save_atomic({"features": feats.float(), "labels": labels, "kept": kept, "skipped": bad.as_list(),
                         "key": json.loads(json.dumps(key, default=str))}, path)
        except OSError as e:  # a read-only run folder, a full disk: the evaluation goes on without the cache
            log.warning(f"warning: features not cached ({describe_os_error(e)}); pass --cache-dir DIR or --no-cache")
    return feats, labels, kept


def _labels_of(dataset, fallback: torch.Tensor, kept: torch.Tensor | None = None) -> torch.Tensor:
    labels = getattr(dataset, "labels", None)
    if isinstance(labels, torch.Tensor) and kept is not None and len(kept) == len(fallback) and len(kept) \
            and int(kept.max()) < len(labels):
        labels = labels[kept.to(torch.int64)]
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
