"""The online kNN monitor of a pretraining run."""

from __future__ import annotations

import torch

from barlowtwins.evaluate.knn import knn_evaluate


def knn_monitor_sets(cfg) -> tuple:
    """The online kNN's (train, val) data sets, loaded once and cached: called before pretraining starts, so a
    missing or unlabelled kNN data set fails at once rather than after the first epoch."""
    from barlowtwins.data.datasets import build_dataset, default_val_split

    name = cfg.knn_dataset or cfg.dataset
    key = (name, cfg.knn_data_dir or cfg.data_dir, cfg.knn_train_split, cfg.knn_val_split or default_val_split(name),
           cfg.knn_max_samples)
    cache = knn_monitor.__dict__.setdefault("cache", {})
    if key not in cache:
        sets = []
        for split in key[2:4]:
            ds = build_dataset(key[0], key[1], split, cfg.download)
            if cfg.knn_max_samples and len(ds) > cfg.knn_max_samples:
                g = torch.Generator().manual_seed(0)
                ds = ds.subset(torch.randperm(len(ds), generator=g)[: cfg.knn_max_samples].sort().values)
            sets.append(ds)
        cache[key] = sets
    return tuple(cache[key])


def knn_monitor(cfg, backbone: torch.nn.Module, device: torch.device, amp_dtype) -> dict | None:
    """The online kNN of a pretraining run (``--knn-every N``): top-1 at k=20 and k=200 on a labelled set.

    The labelled train/val sets are loaded once and cached; ``knn_max_samples`` caps both for speed.
    """
    from barlowtwins.evaluate.features import extract_features

    train_set, val_set = knn_monitor_sets(cfg)
    kw = dict(image_size=cfg.image_size, device=device, amp_dtype=amp_dtype, mean=_norm(cfg, "mean"),
              std=_norm(cfg, "std"), workers=cfg.workers)
    ftr, ytr = extract_features(backbone, train_set, **kw)
    fte, yte = extract_features(backbone, val_set, **kw)
    res = knn_evaluate(ftr, ytr, fte, yte, int(max(ytr.max(), yte.max())) + 1, device=device)
    return {f"knn_{k}_top1": v["top1"] for k, v in res.items()}


def _norm(cfg, which: str):
    from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD

    value = getattr(cfg, which)
    return tuple(value) if value is not None else (IMAGENET_MEAN if which == "mean" else IMAGENET_STD)
