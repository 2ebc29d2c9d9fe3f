"""Weighted k-nearest-neighbour classification on L2-normalised features (Wu et al., 2018).

Each test sample votes with its k most cosine-similar training samples, each weighted by exp(sim / T);
the class with the largest total is the prediction (k = 20 and 200, T = 0.07 by default). Test and
training features are both processed in chunks, so an ImageNet-size memory bank fits on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def knn_predict_scores(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                       num_classes: int, k: int = 20, temperature: float = 0.07,
                       device: torch.device | str = "cpu", test_chunk: int = 1024,
                       train_chunk: int = 262_144) -> torch.Tensor:
    """(N_test, C) class scores from the weighted vote of the ``k`` nearest training samples."""
    scores = []
    for neighbours, sims in _topk_neighbours(train_features, test_features, k, device, test_chunk, train_chunk):
        labels = train_labels.to(device)[neighbours]  # (B, k)
        weights = (sims / temperature).exp()
        votes = torch.zeros(labels.shape[0], num_classes, device=device)
        votes.scatter_add_(1, labels, weights)
        scores.append(votes.cpu())
    return torch.cat(scores)


def _topk_neighbours(train: torch.Tensor, test: torch.Tensor, k: int, device, test_chunk: int, train_chunk: int):
    """Yield (indices, similarities) of the k nearest training rows for each chunk of test rows."""
    k = min(k, train.shape[0])
    train_chunks = [F.normalize(train[i: i + train_chunk].to(device, torch.float32), dim=1)
                    for i in range(0, train.shape[0], train_chunk)]
    offsets = [i for i in range(0, train.shape[0], train_chunk)]
    for start in range(0, test.shape[0], test_chunk):
        q = F.normalize(test[start: start + test_chunk].to(device, torch.float32), dim=1)
        best_sims, best_idx = None, None
        for offset, bank in zip(offsets, train_chunks):
            sims, idx = (q @ bank.T).topk(min(k, bank.shape[0]), dim=1)
            idx = idx + offset
            if best_sims is None:
                best_sims, best_idx = sims, idx
            else:  # merge with the best so far
                sims, order = torch.cat([best_sims, sims], 1).topk(k, dim=1)
                best_idx = torch.cat([best_idx, idx], 1).gather(1, order)
                best_sims = sims
        yield best_idx, best_sims


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """{"top1": %, "top5": %} of (N, C) scores against (N,) labels (top-k capped at the class count)."""
    out = {}
    maxk = min(max(ks), scores.shape[1])
    pred = scores.topk(maxk, dim=1).indices
    correct = pred == labels.view(-1, 1)
    for k in ks:
        out[f"top{k}"] = 100.0 * correct[:, : min(k, maxk)].any(dim=1).float().mean().item()
    return out


def knn_evaluate(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                 test_labels: torch.Tensor, num_classes: int, ks: tuple[int, ...] = (20, 200),
                 temperature: float = 0.07, device: torch.device | str = "cpu") -> dict[str, dict[str, float]]:
    """{"k=20": {"top1", "top5"}, "k=200": {...}} for weighted kNN."""
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    results = {}
    for k in ks:
        scores = knn_predict_scores(train_features, train_labels, test_features, num_classes, k, temperature, device)
        results[f"k={k}"] = topk_accuracy(scores, test_labels)
    return results


def knn_monitor_sets(cfg) -> tuple:
    """The online kNN's (train, val) data sets, loaded once and cached: called before pretraining starts, so a
    missing or unlabelled kNN data set fails at once rather than after the first epoch."""
    from ..data import build_dataset, default_val_split

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
    from .features import extract_features

    train_set, val_set = knn_monitor_sets(cfg)
    kw = dict(image_size=cfg.image_size, device=device, amp_dtype=amp_dtype, mean=_norm(cfg, "mean"),
              std=_norm(cfg, "std"), workers=cfg.workers)
    ftr, ytr = extract_features(backbone, train_set, **kw)
    fte, yte = extract_features(backbone, val_set, **kw)
    res = knn_evaluate(ftr, ytr, fte, yte, int(max(ytr.max(), yte.max())) + 1, device=device)
    return {f"knn_{k}_top1": v["top1"] for k, v in res.items()}


def _norm(cfg, which: str):
    from ..augment import IMAGENET_MEAN, IMAGENET_STD

    value = getattr(cfg, which)
    return tuple(value) if value is not None else (IMAGENET_MEAN if which == "mean" else IMAGENET_STD)
