"""Linear evaluation on a frozen backbone.

``fast`` protocol (default): features are extracted once (centre crop; optionally also the mirror images as
extra training samples), standardised with the training set's statistics, and a grid of linear classifiers
(learning rate x weight decay) is trained *at once* as one batched model over the cached features: every
pass over the data trains all of them. The grid point with the best top-1 on a held-out part of the
training set is retrained on the whole training set and reported on the test split. Minutes, not hours.

``paper`` protocol: the official one (see `linear_paper`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from barlowtwins.evaluate.knn import topk_accuracy

DEFAULT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0)
DEFAULT_WDS = (0.0, 1e-5, 1e-4, 1e-3)


@dataclass
class LinearProbeResult:
    top1: float
    top5: float
    lr: float
    weight_decay: float
    holdout_top1: float
    grid: list[dict]  # every (lr, weight_decay, holdout_top1)


def standardise(train: torch.Tensor, *others: torch.Tensor, eps: float = 1e-6):
    mean = train.mean(0, keepdim=True)
    std = train.std(0, keepdim=True) + eps
    return [(t - mean) / std for t in (train, *others)]


def train_linear_heads(features: torch.Tensor, labels: torch.Tensor, num_classes: int, lrs: list[float],
                       wds: list[float], *, epochs: int = 50, batch_size: int = 1024, momentum: float = 0.9,
                       seed: int = 0, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Train one linear classifier per (lr, wd) pair at once with SGD + cosine; returns weights (H, F, C) and
    biases (H, C). Heads are independent: head h sees only its own lr and wd."""
    n, dim = features.shape
    h = len(lrs)
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(h, dim, num_classes, generator=g) * 0.01).to(device)
    b = torch.zeros(h, num_classes, device=device)
    w.requires_grad_(True)
    b.requires_grad_(True)
    lr = torch.tensor(lrs, device=device, dtype=torch.float32)
    wd = torch.tensor(wds, device=device, dtype=torch.float32)
    mw, mb = torch.zeros_like(w), torch.zeros_like(b)
    x_all = features.to(device)
    y_all = labels.to(device)
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g).to(device)
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size: (s + 1) * batch_size]
            x, y = x_all[idx], y_all[idx]
            logits = torch.einsum("nf,hfc->hnc", x, w) + b[:, None, :]  # (H, B, C)
            # Sum of the heads' mean losses: each head's gradient is its own.
            loss = F.cross_entropy(logits.reshape(-1, num_classes), y.repeat(h), reduction="sum") / len(idx)
            gw, gb = torch.autograd.grad(loss, (w, b))
            with torch.no_grad():
                scale = 0.5 * (1 + math.cos(math.pi * step / total))
                gw = gw + wd.view(h, 1, 1) * w
                mw.mul_(momentum).add_(gw)
                mb.mul_(momentum).add_(gb)
                w.sub_(lr.view(h, 1, 1) * scale * mw)
                b.sub_(lr.view(h, 1) * scale * mb)
            step += 1
    return w.detach(), b.detach()


def heads_scores(w: torch.Tensor, b: torch.Tensor, features: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """(H, N, C) logits of every head."""
    out = []
    for i in range(0, features.shape[0], chunk):
        x = features[i: i + chunk].to(w.device)
        out.append((torch.einsum("nf,hfc->hnc", x, w) + b[:, None, :]).cpu())
    return torch.cat(out, dim=1)


def holdout_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, holdout) index split of the training set, the same for a given seed."""
    n = labels.shape[0]
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    k = max(1, int(round(n * fraction)))
    return perm[k:].sort().values, perm[:k].sort().values


def fast_linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, test_features: torch.Tensor,
                      test_labels: torch.Tensor, num_classes: int, *, lrs=DEFAULT_LRS, wds=DEFAULT_WDS,
                      epochs: int = 50, batch_size: int = 1024, holdout: float = 0.1, seed: int = 0,
                      device: torch.device | str = "cpu", train_groups: torch.Tensor | None = None
                      ) -> LinearProbeResult:
    """Sweep (lr x wd) on a held-out part of the training set, retrain the best on all of it, test.

    ``train_groups`` (optional, (N,) ints) ties rows that come from the same image (e.g. an image and its
    mirror) so that the hold-out split never separates them.
    """
    keep = train_labels >= 0
    train_features, train_labels = train_features[keep], train_labels[keep]
    if train_groups is not None:
        train_groups = train_groups[keep]
    grid = [(lr, wd) for lr in lrs for wd in wds]
    if train_groups is None:
        fit_idx, hold_idx = holdout_split(train_labels, holdout, seed)
    else:
        uniq = torch.unique(train_groups)
        fit_g, hold_g = holdout_split(uniq, holdout, seed)
        is_hold = torch.isin(train_groups, uniq[hold_g])
        fit_idx, hold_idx = torch.nonzero(~is_hold).squeeze(1), torch.nonzero(is_hold).squeeze(1)
    xf, xh = standardise(train_features[fit_idx], train_features[hold_idx])
    w, b = train_linear_heads(xf, train_labels[fit_idx], num_classes, [g[0] for g in grid], [g[1] for g in grid],
                              epochs=epochs, batch_size=batch_size, seed=seed, device=device)
    scores = heads_scores(w, b, xh)
    hold_top1 = [topk_accuracy(s, train_labels[hold_idx])["top1"] for s in scores]
    best = max(range(len(grid)), key=lambda i: (hold_top1[i], -i))
    lr, wd = grid[best]
    xtr, xte = standardise(train_features, test_features)
    w, b = train_linear_heads(xtr, train_labels, num_classes, [lr], [wd], epochs=epochs, batch_size=batch_size,
                              seed=seed, device=device)
    acc = topk_accuracy(heads_scores(w, b, xte)[0], test_labels)
    return LinearProbeResult(acc["top1"], acc["top5"], lr, wd, hold_top1[best],
                             [{"lr": g[0], "weight_decay": g[1], "holdout_top1": a} for g, a in zip(grid, hold_top1)])
