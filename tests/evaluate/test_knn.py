"""Weighted kNN and top-k accuracy, checked by hand."""

import pytest
import torch

from barlowtwins.evaluate.knn import knn_evaluate, knn_predict_scores, topk_accuracy


def test_knn_weighted_vote_by_hand():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    labels = torch.tensor([0, 0, 1, 1, 2])
    test = torch.tensor([[1.0, 0.05]])
    scores = knn_predict_scores(train, labels, test, num_classes=3, k=3, temperature=0.5)
    tn = torch.nn.functional.normalize(train, dim=1)
    q = torch.nn.functional.normalize(test, dim=1)
    sims = (q @ tn.T)[0]
    # The three nearest are rows 0, 1 and 4: class 0 gets two votes, class 2 one, class 1 none.
    expected = torch.tensor([torch.exp(sims[0] / 0.5) + torch.exp(sims[1] / 0.5), 0.0, torch.exp(sims[4] / 0.5)])
    torch.testing.assert_close(scores[0], expected)


def test_knn_chunking_changes_nothing():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(300, 16, generator=g), torch.randn(70, 16, generator=g)
    labels = torch.randint(0, 5, (300,), generator=g)
    full = knn_predict_scores(train, labels, test, 5, k=20)
    chunked = knn_predict_scores(train, labels, test, 5, k=20, test_chunk=7, train_chunk=45)
    # Scores are sums of exp(sim / 0.07) (up to ~1e6); chunked matmuls round differently in the last bit.
    torch.testing.assert_close(chunked, full, rtol=1e-5, atol=1e-3)


def test_knn_evaluate_on_separable_clusters_and_ignores_unlabelled():
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(4, 8, generator=g) * 5
    y = torch.arange(200) % 4
    x = centres[y] + 0.1 * torch.randn(200, 8, generator=g)
    y_train = y.clone()
    y_train[::10] = -1  # unlabelled rows are left out of the memory bank
    res = knn_evaluate(x, y_train, x[:40], y[:40], 4, ks=(5,))
    assert res["k=5"]["top1"] == 100.0 and res["k=5"]["top5"] == 100.0


def test_topk_accuracy_by_hand():
    scores = torch.tensor([[0.1, 0.5, 0.4], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5]])
    labels = torch.tensor([2, 0, 0])
    acc = topk_accuracy(scores, labels, ks=(1, 2))
    assert acc["top1"] == pytest.approx(100 / 3) and acc["top2"] == pytest.approx(200 / 3)
