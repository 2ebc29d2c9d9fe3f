"""VOC07 classification with per-class linear SVMs on frozen features (Goyal et al., 2019), as the paper's
VOC07 column reports it.

Features are L2-normalised. For every class and every cost C, an L2-regularised squared-hinge SVM with an
(also regularised) intercept and positive weight 2 is fitted; the cost with the best 3-fold cross-validated
AP on ``trainval`` is kept per class, refitted on all of ``trainval`` and scored on ``test`` (difficult
images left out); mAP is the mean over the 20 classes. The SVMs are solved in the primal with L-BFGS, all
classes at once, on any device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The benchmark's costs: ten decades plus 0.5^4 ... 0.5^19.
DEFAULT_COSTS = tuple([10.0 ** e for e in range(-7, 3)] + [0.5 ** k for k in range(4, 20)])


def _ranked(scores: torch.Tensor, positive: torch.Tensor):
    """Positives in score order (ties kept in input order), precision at every rank and recall; None if no positive."""
    order = torch.argsort(scores, descending=True, stable=True)
    tp = positive[order].double()
    if tp.sum() == 0:
        return None
    ctp = torch.cumsum(tp, 0)
    precision = ctp / torch.arange(1, len(tp) + 1, dtype=torch.float64)
    return tp, precision, ctp / tp.sum()


def average_precision(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the precision-recall curve with precision made monotone (VOC 2010+ / the benchmark's AP)."""
    ranked = _ranked(scores, positive)
    if ranked is None:
        return 0.0
    _, precision, recall = ranked
    mrec = torch.cat([torch.zeros(1, dtype=torch.float64), recall, torch.ones(1, dtype=torch.float64)])
    mpre = torch.cat([torch.zeros(1, dtype=torch.float64), precision, torch.zeros(1, dtype=torch.float64)])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])  # precision envelope
    change = torch.nonzero(mrec[1:] != mrec[:-1]).squeeze(1) + 1
    return float(((mrec[change] - mrec[change - 1]) * mpre[change]).sum())


def average_precision_stepwise(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Non-interpolated AP, sum_n (R_n - R_{n-1}) P_n (what the benchmark's cross-validation scores)."""
    ranked = _ranked(scores, positive)
    if ranked is None:
        return 0.0
    tp, precision, _ = ranked
    return float((precision * tp).sum() / tp.sum())


def fit_svms(x: torch.Tensor, y: torch.Tensor, cost: float, positive_weight: float = 2.0,
             max_iter: int = 500) -> torch.Tensor:
    """K squared-hinge SVMs at once: x (N, F), y (N, K) in {+1, -1} -> weights (F + 1, K), last row the bias.

    Minimises 0.5 ||w||^2 + C sum_i c_i max(0, 1 - y_i (w . [x_i, 1]))^2 per class, with c_i = positive_weight
    for positives and 1 for negatives (liblinear's L2-loss SVM with class weights and intercept scaling 1).
    """
    xt = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)
    yy = y.to(x.dtype)
    weight = torch.where(yy > 0, positive_weight, 1.0)
    w = torch.zeros(xt.shape[1], y.shape[1], dtype=x.dtype, device=x.device, requires_grad=True)
    scale = 1.0 / (1.0 + cost * x.shape[0])  # keeps the objective O(1) across costs for the stopping test
    opt = torch.optim.LBFGS([w], lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-10, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        margin = F.relu(1 - yy * (xt @ w))
        loss = scale * (0.5 * w.square().sum() + cost * (weight * margin.square()).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach()


def svm_scores(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x @ w[:-1] + w[-1]


def voc07_svm_map(train_features: torch.Tensor, train_targets: torch.Tensor, test_features: torch.Tensor,
                  test_targets: torch.Tensor, costs=DEFAULT_COSTS, folds: int = 3,
                  device: torch.device | str = "cpu") -> dict:
    """mAP (%) on ``test`` of per-class SVMs chosen by ``folds``-fold cross-validated AP on ``train``.

    Targets are (N, K) with 1 present, 0 absent, -1 difficult: difficult images count as negatives when
    training (as in the benchmark) and are left out of the test AP.
    """
    xtr = F.normalize(train_features.to(device, torch.float64), dim=1)
    xte = F.normalize(test_features.to(device, torch.float64), dim=1)
    ytr = torch.where(train_targets.to(device) == 1, 1, -1)
    n, k = ytr.shape
    # Unshuffled contiguous folds shared by all classes, so that one fit serves the 20 classes (the benchmark's
    # scikit-learn cross-validation stratifies per class instead).
    fold_of = torch.div(torch.arange(n, device=device) * folds, n, rounding_mode="floor")
    cv = torch.zeros(len(costs), k, dtype=torch.float64)
    for ci, cost in enumerate(costs):
        for f in range(folds):
            fit, held = fold_of != f, fold_of == f
            w = fit_svms(xtr[fit], ytr[fit], cost)
            s = svm_scores(w, xtr[held]).cpu()
            for c in range(k):
                cv[ci, c] += average_precision_stepwise(s[:, c], (ytr[held][:, c] == 1).cpu()) / folds
    best = cv.argmax(dim=0).tolist()  # per class
    scores = torch.zeros(xte.shape[0], k, dtype=torch.float64)
    for ci in sorted(set(best)):  # one refit per distinct chosen cost, for all classes that chose it
        cls = [c for c in range(k) if best[c] == ci]
        w = fit_svms(xtr, ytr[:, cls], costs[ci])
        scores[:, cls] = svm_scores(w, xte).cpu()
    aps = []
    for c in range(k):
        t = test_targets[:, c]
        keep = t != -1
        aps.append(100.0 * average_precision(scores[keep, c], t[keep] == 1))
    return {"mAP": sum(aps) / len(aps), "per_class_AP": aps, "costs": [costs[i] for i in best],
            "cv_AP": cv.max(dim=0).values.tolist()}
