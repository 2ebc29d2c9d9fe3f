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
        best_sims: torch.Tensor | None = None
        best_idx: torch.Tensor | None = None
        for offset, bank in zip(offsets, train_chunks):
            sims, idx = (q @ bank.T).topk(min(k, bank.shape[0]), dim=1)
            idx = idx + offset
            if best_sims is None or best_idx is None:  # the first chunk (they are set together)
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


