"""Evaluation pieces: kNN, the fast linear probe, the frozen-backbone check, AP/mAP and the SVMs."""

import pytest
import torch

from barlowtwins.evaluate.classifier import ClassifierRun, assert_unchanged, lr_factor, snapshot
from barlowtwins.evaluate.knn import knn_evaluate, knn_predict_scores, topk_accuracy
from barlowtwins.evaluate.linear import fast_linear_probe, train_linear_heads
from barlowtwins.evaluate.svm import (
    average_precision,
    average_precision_11point,
    average_precision_stepwise,
    fit_svms,
    svm_scores,
    voc07_svm_map,
)
from barlowtwins.models.backbones import create_backbone


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


def test_linear_heads_train_independently():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(120, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    wa, ba = train_linear_heads(x, y, 3, [0.1, 0.5], [0.0, 1e-3], epochs=3, batch_size=32, seed=4)
    wb, bb = train_linear_heads(x, y, 3, [2.0, 0.5], [0.1, 1e-3], epochs=3, batch_size=32, seed=4)
    assert wa.shape == (2, 6, 3) and ba.shape == (2, 3)
    # Head 1 has the same settings in both runs: another head's lr and wd must not touch it.
    torch.testing.assert_close(wa[1], wb[1])
    torch.testing.assert_close(ba[1], bb[1])
    assert not torch.allclose(wa[0], wb[0])


def test_fast_probe_on_linearly_separable_features():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(10, 5, generator=g)
    x = torch.randn(2000, 10, generator=g)
    y = (x @ w).argmax(1)
    res = fast_linear_probe(x[:1500], y[:1500], x[1500:], y[1500:], 5, epochs=20, lrs=(0.1, 1.0), wds=(0.0,))
    assert res.top1 > 95 and res.top5 == 100.0
    assert len(res.grid) == 2 and res.lr in (0.1, 1.0)
    again = fast_linear_probe(x[:1500], y[:1500], x[1500:], y[1500:], 5, epochs=20, lrs=(0.1, 1.0), wds=(0.0,))
    assert again.top1 == res.top1  # seeded: repeatable


def test_frozen_backbone_check_catches_a_change():
    net = create_backbone("resnet18", width=8)
    before = snapshot(net)
    assert_unchanged(net, before)
    net.train()
    net(torch.randn(4, 3, 32, 32))  # a forward in train mode updates BN running statistics
    with pytest.raises(RuntimeError, match="frozen-backbone check failed.*running_mean"):
        assert_unchanged(net, before)


def test_classifier_schedules():
    cos = ClassifierRun(epochs=20, batch_size=256, image_size=32, device=torch.device("cpu"))
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 10) == pytest.approx(0.5)
    step = ClassifierRun(epochs=20, batch_size=256, image_size=32, device=torch.device("cpu"), schedule="step")
    assert [lr_factor(step, e) for e in (0, 11, 12, 15, 16, 19)] == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.04])


def test_average_precision_by_hand():
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    positive = torch.tensor([True, False, True, False])
    # Precision at the positives: 1/1 and 2/3; recall 0.5 and 1.0.
    assert average_precision(scores, positive) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert average_precision_stepwise(scores, positive) == pytest.approx((1 + 2 / 3) / 2)
    # 11-point: precision 1 at recall 0..0.5 (six points), 2/3 at 0.6..1.0 (five points).
    assert average_precision_11point(scores, positive) == pytest.approx((6 + 5 * 2 / 3) / 11)
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


def test_effective_rank_by_hand():
    from barlowtwins.evaluate.collapse import effective_rank

    q, _ = torch.linalg.qr(torch.randn(50, 50, generator=torch.Generator().manual_seed(7), dtype=torch.float64))
    # Centred data with k equal singular values has effective rank k.
    for k in (1, 3, 10):
        basis = q[:, :k] - q[:, :k].mean(0, keepdim=True)
        u, s, vh = torch.linalg.svd(basis, full_matrices=False)
        z = u @ vh  # equal singular values
        assert effective_rank(z) == pytest.approx(k, rel=1e-6)
    s = torch.tensor([3.0, 1.0])  # p = (0.75, 0.25): exp(H) = exp(-(0.75 ln 0.75 + 0.25 ln 0.25))
    z = torch.zeros(4, 2, dtype=torch.float64)
    z[0, 0], z[1, 0], z[2, 1], z[3, 1] = s[0] / 2 ** 0.5, -s[0] / 2 ** 0.5, s[1] / 2 ** 0.5, -s[1] / 2 ** 0.5
    import math
    assert effective_rank(z) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert effective_rank(torch.ones(5, 3)) == 0.0  # fully collapsed


def test_results_table_shows_every_metric_a_protocol_reports(tmp_path, capsys):
    import json

    from barlowtwins.cli import main
    from barlowtwins.evaluate.results import EvalResult, find_results, markdown_table, write_result

    records = [
        EvalResult("knn", "folder", "val", {"k=20": {"top1": 71.0, "top5": 90.5}, "k=200": {"top1": 70.0,
                                                                                         "top5": 91.0}}),
        EvalResult("linear-paper", "folder", "val", {"last": {"top1": 60.0, "top5": 80.0},
                                                      "best": {"top1": 61.0, "top5": 81.0, "epoch": 7}}),
        EvalResult("transfer-svm", "voc2007", "test", {"mAP": 80.25}),
        EvalResult("detect", "voc0712", "test", {"AP": 54.5, "AP50": 81.25, "AP75": 60.75}),  # detection
    ]
    for i, r in enumerate(records):
        write_result({**r.to_record(), "checkpoint": "runs/x"}, tmp_path / "eval" / f"{i}.json")
    (tmp_path / "eval" / "other.json").write_text(json.dumps({"not": "a result"}))
    table = markdown_table(find_results([str(tmp_path)]))
    lines = table.splitlines()
    assert lines[0] == ("| checkpoint | protocol | dataset | split | setting | top-1 | top-5 | mAP | AP | AP50 | AP75 "
                        "| epoch | file |")
    assert len(lines) == 2 + 2 + 2 + 1 + 1
    detect = next(line for line in lines if "| detect |" in line).split(" | ")
    assert detect[5:12] == ["", "", "", "54.50", "81.25", "60.75", ""]
    best = next(line for line in lines if "| best |" in line).split(" | ")
    assert best[5:7] == ["61.00", "81.00"] and best[11] == "7"
    assert records[3].summary() == "AP 54.50 AP50 81.25 AP75 60.75"
    assert records[0].summary() == "k=20: top-1 71.00 top-5 90.50 | k=200: top-1 70.00 top-5 91.00"
    assert main(["results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == table


def test_feature_cache_key_covers_the_data_folder_and_precision(tmp_path):
    """Two folders with as many images, or another precision, never share cached features; they are stored in
    float32."""
    from conftest import make_image_folder

    from barlowtwins.data.datasets import image_folder
    from barlowtwins.evaluate.features import cached_features

    a = image_folder(make_image_folder(tmp_path / "a", per_class=2, size=10, splits=("train",), seed=1))
    b = image_folder(make_image_folder(tmp_path / "b", per_class=2, size=10, splits=("train",), seed=2))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    kw = dict(key={"checkpoint": "x", "dataset": "images", "split": "train"}, cache_dir=tmp_path / "cache",
              image_size=8, device=torch.device("cpu"), batch_size=4, workers=0)
    fa, _ = cached_features(net, a, **kw)
    fb, _ = cached_features(net, b, **kw)
    assert not torch.equal(fa, fb), "the second folder got the first folder's features"
    cached_features(net, a, amp_dtype=torch.bfloat16, **kw)
    files = sorted((tmp_path / "cache").glob("features-*.pt"))
    assert len(files) == 3
    stored = torch.load(files[0], weights_only=True)["features"]
    assert stored.dtype == torch.float32
    again, _ = cached_features(net, a, **kw)
    assert torch.equal(again, fa)  # reused exactly (no float16 rounding)
