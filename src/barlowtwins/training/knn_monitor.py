"""The online kNN monitor of a pretraining run (``--knn-every N``)."""

from __future__ import annotations

import torch

from barlowtwins.data.datasets import align_classes, build_dataset, data_options, default_val_split
from barlowtwins.evaluate.features import extract_features
from barlowtwins.evaluate.knn import knn_evaluate
from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD


class KnnMonitor:
    """Top-1 at k=20 and k=200 of the backbone's features on a labelled (train, val) pair of data sets.

    Both sets are loaded when the monitor is made (the trainer makes it before pretraining starts, so a missing or
    unlabelled kNN data set fails at once rather than after the first epoch) and kept for the run;
    ``knn_max_samples`` caps both for speed.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        name = cfg.knn_dataset or cfg.dataset
        root = cfg.knn_data_dir or cfg.data_dir
        splits = (cfg.knn_train_split, cfg.knn_val_split or default_val_split(name))
        train, val = (self._load(name, root, split) for split in splits)
        self.train_set, (self.val_set, _) = train, align_classes(train, val)  # one class map for both splits

    def _load(self, name: str, root, split: str):
        ds = build_dataset(name, root, split, self.cfg.download, **data_options(self.cfg, name))
        cap = self.cfg.knn_max_samples
        if cap and len(ds) > cap:
            g = torch.Generator().manual_seed(0)  # the same subset at every evaluation and on every resume
            ds = ds.subset(torch.randperm(len(ds), generator=g)[:cap].sort().values)
        return ds

    def __call__(self, backbone: torch.nn.Module, device: torch.device, amp_dtype) -> dict:
        """``{"knn_k=20_top1": ..., "knn_k=200_top1": ...}`` for ``backbone`` now."""
        cfg = self.cfg
        kw = dict(image_size=cfg.image_size, device=device, amp_dtype=amp_dtype,
                  mean=tuple(cfg.mean) if cfg.mean is not None else IMAGENET_MEAN,
                  std=tuple(cfg.std) if cfg.std is not None else IMAGENET_STD, workers=cfg.workers)
        ftr, ytr = extract_features(backbone, self.train_set, **kw)
        fte, yte = extract_features(backbone, self.val_set, **kw)
        res = knn_evaluate(ftr, ytr, fte, yte, int(max(ytr.max(), yte.max())) + 1, device=device)
        return {f"knn_{k}_top1": v["top1"] for k, v in res.items()}
