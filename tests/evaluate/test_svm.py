"""VOC07 SVMs: average precision by hand, the primal problem, mAP on easy data."""

import pytest
import torch

from barlowtwins.evaluate.svm import average_precision, average_precision_stepwise, fit_svms, svm_scores, voc07_svm_map


def test_average_precision_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    positive = torch.tensor([True, False, True, False])
    # Precision at the positives: 1/1 and 2/3; recall 0.5 and 1.0.
    assert average_precision(scores, positive) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision_stepwise(scores, positive) == pytest.approx((1 + 2 / 3) / 2)
    # The envelope: a later higher precision lifts earlier recall levels.
    s2 = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    p2 = torch.tensor([False, True, False, True, True])
    # precisions at positives: 1/2, 2/4, 3/5; envelope: 0.6 everywhere
    assert average_precision(s2, p2) == pytest.approx(0.6)
    assert average_precision(torch.tensor([0.3, 0.2]), torch.tensor([False, False])) == 0.0


def test_svm_solves_the_primal_problem():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(80, 4, generator=g, dtype=torch.float64)
    y = torch.where(x[:, :2].sum(1, keepdim=True) > 0, 1, -1).repeat(1, 2)
    y[:, 1] = -y[:, 1]
    w = fit_svms(x, y, cost=1.0)
    assert (torch.sign(svm_scores(w, x)) == y).float().mean() > 0.95
    # Optimality: the gradient of the objective vanishes at the solution.
    wv = w.clone().requires_grad_(True)
    xt = torch.cat([x, torch.ones(80, 1, dtype=x.dtype)], 1)
    weight = torch.where(y > 0, 2.0, 1.0)
    obj = 0.5 * wv.square().sum() + (weight * torch.relu(1 - y * (xt @ wv)).square()).sum()
    obj.backward()
    assert wv.grad.abs().max() < 1e-4


def test_voc07_map_on_easy_multilabel_data():
    g = torch.Generator().manual_seed(6)
    k, n = 3, 120
    targets = (torch.rand(n, k, generator=g) < 0.4).to(torch.int8)
    feats = targets.float() * 3 + 0.3 * torch.randn(n, k, generator=g)
    feats = torch.cat([feats, torch.randn(n, 5, generator=g)], 1)
    targets[0, 0] = -1  # a difficult image: ignored in the test AP
    res = voc07_svm_map(feats[:80], targets[:80], feats[80:], targets[80:], costs=(0.01, 1.0))
    assert res["mAP"] > 95 and len(res["per_class_AP"]) == k and set(res["costs"]) <= {0.01, 1.0}
