"""Average precision: VOC and COCO computed by hand, and COCO's in torch against pycocotools."""

from __future__ import annotations

import pytest
import torch
from detection_shapes import coco_from_targets

from barlowtwins.evaluate.detection.ap import (
    coco_detection_ap,
    detections_to_coco,
    pycocotools_ap,
    voc_ap,
    voc_detection_ap,
)


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes, labels, ignore=None):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "ignore": torch.tensor(ignore if ignore is not None else [False] * len(labels), dtype=torch.bool)}


def _voc_case(second_hit):
    # Image A: g1 (regular) and g2 (difficult); image B: g3. Detections by falling score:
    # d1 = g1 (TP), d2 = g2 (difficult: ignored), d3 = g1 again (duplicate: FP), d4 nowhere (FP), d5 on g3.
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True]), _gt([[0, 0, 10, 10]], [1])]
    preds = [_pred([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.8, 0.7], [1, 1, 1]),
             _pred([[50, 50, 60, 60], second_hit], [0.6, 0.5], [1, 1])]
    return preds, gts


def _random_case(seed: int, n_images: int = 7, num_classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for _ in range(n_images):
        n = int(torch.randint(0, 6, (), generator=g))
        xy = torch.rand(n, 2, generator=g) * 80
        wh = 5 + torch.rand(n, 2, generator=g) * 40
        boxes = torch.cat([xy, xy + wh], 1)
        labels = torch.randint(1, num_classes + 1, (n,), generator=g)
        crowd = torch.rand(n, generator=g) < 0.15
        gts.append({"boxes": boxes, "labels": labels, "ignore": crowd})
        # detections: jittered copies of most objects (some with the wrong class) plus random boxes
        keep = torch.rand(n, generator=g) < 0.8
        jitter = boxes[keep] + torch.randn(int(keep.sum()), 4, generator=g) * 4
        jitter[:, 2:] = torch.maximum(jitter[:, 2:], jitter[:, :2] + 1)
        jl = torch.where(torch.rand(int(keep.sum()), generator=g) < 0.2,
                         torch.randint(1, num_classes + 1, (int(keep.sum()),), generator=g), labels[keep])
        m = int(torch.randint(0, 5, (), generator=g))
        rxy = torch.rand(m, 2, generator=g) * 80
        rand = torch.cat([rxy, rxy + 5 + torch.rand(m, 2, generator=g) * 40], 1)
        db = torch.cat([jitter, rand])
        preds.append({"boxes": db, "scores": torch.rand(len(db), generator=g),
                      "labels": torch.cat([jl, torch.randint(1, num_classes + 1, (m,), generator=g)])})
    return preds, gts


def test_voc_ap_hand_computed():
    # d5 exactly on g3: TP, FP, FP, TP over 2 objects -> recall .5 .5 .5 .5 1, precision 1 1 .5 1/3 .5.
    preds, gts = _voc_case([0, 0, 10, 10])
    res = voc_detection_ap(preds, gts, num_classes=1)
    # 11-point: precision 1 at recall >= 0 ... 0.5 (6 points), 0.5 at 0.6 ... 1.0 (5 points).
    assert res["AP50"] == pytest.approx(100 * 8.5 / 11)
    assert res["AP"] == pytest.approx(100 * 8.5 / 11)  # every match is exact: the same at every IoU
    area = voc_detection_ap(preds, gts, num_classes=1, use_07_metric=False)
    assert area["AP50"] == pytest.approx(100 * (0.5 * 1 + 0.5 * 0.5))  # envelope 1 up to recall .5, then .5


def test_voc_ap_across_iou_thresholds_hand_computed():
    # d5 covers 70 of g3's 100 pixels (IoU 0.7): a hit at 0.50-0.65, a miss from 0.70 (VOC needs IoU > t).
    preds, gts = _voc_case([0, 0, 10, 7])
    res = voc_detection_ap(preds, gts, num_classes=1)
    hit, miss = 8.5 / 11, 6 / 11  # a miss leaves recall at .5: precision 1 on 6 of the 11 points
    assert res["AP50"] == pytest.approx(100 * hit)
    assert res["AP75"] == pytest.approx(100 * miss)
    assert res["AP"] == pytest.approx(100 * (4 * hit + 6 * miss) / 10)


def test_voc_ap_edge_cases():
    assert voc_ap(torch.tensor([1.0]), torch.tensor([1.0])) == pytest.approx(1.0)
    assert voc_ap(torch.tensor([1.0]), torch.tensor([1.0]), use_07_metric=False) == pytest.approx(1.0)
    # A class with objects but no detections scores 0; a class with no (non-difficult) objects is left out.
    gts = [_gt([[0, 0, 10, 10], [5, 5, 9, 9]], [1, 2], [False, True])]
    res = voc_detection_ap([_pred([], [], [])], gts, num_classes=2)
    assert res["AP50"] == 0.0 and list(res["per_class_AP50"]) == [1]


def test_coco_ap_hand_computed():
    # One image, two objects; detections TP (0.9), FP (0.8), TP (0.7): recall .5 .5 1, precision 1 .5 2/3.
    # The 101 recall points 0.00 ... 0.50 read precision 1, the 50 points above 0.5 read 2/3 (the envelope).
    gts = [_gt([[0, 0, 10, 10], [20, 20, 40, 40]], [1, 1])]
    preds = [_pred([[0, 0, 10, 10], [60, 60, 70, 70], [20, 20, 40, 40]], [0.9, 0.8, 0.7], [1, 1, 1])]
    expected = 100 * (51 * 1 + 50 * 2 / 3) / 101
    res = coco_detection_ap(preds, gts, num_classes=1)
    assert res["AP"] == pytest.approx(expected) and res["AP50"] == pytest.approx(expected)
    pytest.importorskip("pycocotools")
    ref = pycocotools_ap(coco_from_targets(gts, 1), detections_to_coco(preds))
    assert ref["AP"] == pytest.approx(expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_ap_in_torch_matches_pycocotools_on_random_boxes(seed):
    pytest.importorskip("pycocotools")
    preds, gts = _random_case(seed)
    ours = coco_detection_ap(preds, gts, num_classes=3)
    ref = pycocotools_ap(coco_from_targets(gts, 3), detections_to_coco(preds))
    for k in ("AP", "AP50", "AP75"):
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), (k, ours, ref)
    assert 0 < ours["AP50"] < 100  # a case that exercises hits and misses


def test_coco_ap_max_detections_per_image():
    # 3 detections, only the best 2 counted: the object found by the lowest score is missed.
    gts = [_gt([[0, 0, 10, 10]], [1])]
    preds = [_pred([[50, 50, 60, 60], [70, 70, 80, 80], [0, 0, 10, 10]], [0.9, 0.8, 0.7], [1, 1, 1])]
    assert coco_detection_ap(preds, gts, 1, max_dets=2)["AP"] == 0.0
    assert coco_detection_ap(preds, gts, 1, max_dets=3)["AP"] > 0.0
