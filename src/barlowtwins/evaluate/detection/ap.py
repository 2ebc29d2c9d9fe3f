"""Average precision of detections: the VOC protocol and COCO's, in plain PyTorch, and COCO's via pycocotools.

Inputs are per image: predictions ``{"boxes": (D, 4) xyxy, "scores": (D,), "labels": (D,)}`` and ground truth
``{"boxes": (G, 4) xyxy, "labels": (G,), "ignore": (G,) bool}`` (``ignore``: VOC's *difficult*, COCO's
*iscrowd*). Labels are class ids; background is never listed.

* `voc_detection_ap`: the VOC evaluation as Detectron2's ``PascalVOCDetectionEvaluator`` runs it (the figures
  self-supervised papers report on VOC07+12): per class, detections of all images sorted by score; each takes
  the ground-truth box it overlaps most; IoU above the threshold on a difficult box -> ignored, on an unclaimed
  box -> true positive, else false positive. AP per class is the 11-point VOC07 metric (or the area under the
  interpolated curve, VOC2010+), averaged over classes; ``AP`` is the mean over IoU 0.50:0.05:0.95.
* `coco_detection_ap`: COCO's ``COCOeval`` for area "all" and 100 detections per image, re-written in torch
  (greedy matching per image and class with crowd/ignored boxes matched last and re-usable, crowd IoU as
  intersection over the detection's area, 101-point interpolated precision). Used where pycocotools is absent;
  tests check it against pycocotools on random boxes.
* `pycocotools_ap`: the reference ``COCOeval`` on the same inputs (or on a COCO annotation file), boxes or masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import box_area, box_iou

IOU_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.50, 0.55, ..., 0.95
_EPS = 2.220446049250313e-16  # numpy's np.spacing(1), as COCOeval and voc_eval use it


# --------------------------------------------------------------------------------------------------------
# VOC
# --------------------------------------------------------------------------------------------------------

def voc_ap(recall: torch.Tensor, precision: torch.Tensor, use_07_metric: bool = True) -> float:
    """AP of one class from its cumulative recall/precision curve (both (D,), detections by falling score).

    ``use_07_metric``: mean of the best precision at recall >= 0, 0.1, ..., 1 (VOC2007's 11 points); otherwise the
    exact area under the monotone (interpolated) precision-recall curve (VOC2010 and later).
    """
    recall, precision = recall.double(), precision.double()
    if use_07_metric:
        total = 0.0
        for t in torch.arange(0, 11, dtype=torch.float64) / 10:
            above = recall >= t
            total += float(precision[above].max()) if bool(above.any()) else 0.0
        return total / 11
    mrec = torch.cat([recall.new_zeros(1), recall, recall.new_ones(1)])
    mpre = torch.cat([precision.new_zeros(1), precision, precision.new_zeros(1)])
    mpre = torch.flip(torch.cummax(torch.flip(mpre, [0]), 0).values, [0])  # precision envelope from the right
    change = torch.nonzero(mrec[1:] != mrec[:-1]).flatten()
    return float(((mrec[change + 1] - mrec[change]) * mpre[change + 1]).sum())


def _voc_class_curve(preds: Sequence[dict], gts: Sequence[dict], cls: int, iou_threshold: float):
    """(recall, precision, number of non-difficult boxes) of one class at one IoU threshold (VOC matching)."""
    npos = 0
    image_of, boxes_of, scores_of = [], [], []
    gt_boxes, gt_ignore, claimed = [], [], []
    for i, (p, g) in enumerate(zip(preds, gts)):
        keep = g["labels"] == cls
        gt_boxes.append(g["boxes"][keep].double())
        gt_ignore.append(g["ignore"][keep].bool())
        claimed.append(torch.zeros(int(keep.sum()), dtype=torch.bool))
        npos += int((~gt_ignore[-1]).sum())
        mine = p["labels"] == cls
        boxes_of.append(p["boxes"][mine].double())
        scores_of.append(p["scores"][mine].double())
        image_of.append(torch.full((int(mine.sum()),), i, dtype=torch.long))
    scores = torch.cat(scores_of)
    boxes = torch.cat(boxes_of)
    image = torch.cat(image_of)
    order = torch.argsort(-scores, stable=True)
    tp = torch.zeros(len(order), dtype=torch.float64)
    fp = torch.zeros(len(order), dtype=torch.float64)
    for d, k in enumerate(order.tolist()):
        i = int(image[k])
        if len(gt_boxes[i]) == 0:
            fp[d] = 1
            continue
        ious = box_iou(boxes[k: k + 1], gt_boxes[i])[0]  # (G,)
        best, j = float(ious.max()), int(ious.argmax())
        if best > iou_threshold:
            if gt_ignore[i][j]:
                continue  # a detection of a difficult object counts neither way
            if not claimed[i][j]:
                tp[d] = 1
                claimed[i][j] = True
            else:
                fp[d] = 1  # a duplicate
        else:
            fp[d] = 1
    tp, fp = torch.cumsum(tp, 0), torch.cumsum(fp, 0)
    recall = tp / max(npos, 1)
    precision = tp / torch.clamp(tp + fp, min=_EPS)
    return recall, precision, npos


def voc_detection_ap(preds: Sequence[dict], gts: Sequence[dict], num_classes: int,
                     use_07_metric: bool = True, iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
    """``{"AP", "AP50", "AP75", "per_class_AP50"}`` in percent, classes ``1..num_classes`` (those with boxes).

    Classes without a single non-difficult box in ``gts`` are left out of the means (their AP is undefined).
    """
    per_threshold = {}
    per_class50 = {}
    for t in iou_thresholds:
        aps = []
        for cls in range(1, num_classes + 1):
            recall, precision, npos = _voc_class_curve(preds, gts, cls, t)
            if npos == 0:
                continue
            ap = 100 * voc_ap(recall, precision, use_07_metric) if len(recall) else 0.0
            aps.append(ap)
            if abs(t - 0.5) < 1e-9:
                per_class50[cls] = ap
        per_threshold[round(t, 2)] = sum(aps) / len(aps) if aps else float("nan")
    return {"AP": sum(per_threshold.values()) / len(per_threshold), "AP50": per_threshold.get(0.5, float("nan")),
            "AP75": per_threshold.get(0.75, float("nan")), "per_class_AP50": per_class50}


# --------------------------------------------------------------------------------------------------------
# COCO, in torch
# --------------------------------------------------------------------------------------------------------

def _crowd_iou(dt: torch.Tensor, gt: torch.Tensor, crowd: torch.Tensor) -> torch.Tensor:
    """(D, G) IoU; against crowd boxes COCO uses intersection over the detection's area."""
    iou = box_iou(dt, gt)
    if bool(crowd.any()):
        lt = torch.max(dt[:, None, :2], gt[None, :, :2])
        rb = torch.min(dt[:, None, 2:], gt[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(-1)
        iof = inter / box_area(dt)[:, None].clamp(min=_EPS)
        iou = torch.where(crowd[None, :], iof, iou)
    return iou


def _coco_match(dt_boxes, dt_scores, gt_boxes, gt_ignore, thresholds: torch.Tensor, max_dets: int):
    """COCOeval.evaluateImg for one image and class (area "all"): (dt_scores, dt_matched (T, D), dt_ignored (T, D))."""
    order = torch.argsort(-dt_scores, stable=True)[:max_dets]
    dt_boxes, dt_scores = dt_boxes[order], dt_scores[order]
    g_order = torch.argsort(gt_ignore.to(torch.uint8), stable=True)  # ordinary boxes first, ignored last
    gt_boxes, gt_ignore = gt_boxes[g_order], gt_ignore[g_order]
    n_t, n_d, n_g = len(thresholds), len(dt_boxes), len(gt_boxes)
    matched = torch.zeros(n_t, n_d, dtype=torch.bool)
    dt_ig = torch.zeros(n_t, n_d, dtype=torch.bool)
    if n_d == 0 or n_g == 0:
        return dt_scores, matched, dt_ig
    ious = _crowd_iou(dt_boxes, gt_boxes, gt_ignore).tolist()
    ignore = gt_ignore.tolist()
    for ti, t in enumerate(thresholds.tolist()):
        gt_taken = [False] * n_g
        for d in range(n_d):
            best, m = min(t, 1 - 1e-10), -1
            for g in range(n_g):
                if gt_taken[g] and not ignore[g]:
                    continue  # an ordinary box matches once; crowd boxes absorb any number
                if m > -1 and not ignore[m] and ignore[g]:
                    break  # already on an ordinary box: never trade it for an ignored one
                if ious[d][g] < best:
                    continue
                best, m = ious[d][g], g
            if m == -1:
                continue
            dt_ig[ti, d] = ignore[m]
            matched[ti, d] = True
            gt_taken[m] = True
    return dt_scores, matched, dt_ig


def coco_detection_ap(preds: Sequence[dict], gts: Sequence[dict], num_classes: int, max_dets: int = 100,
                      iou_thresholds: Sequence[float] = IOU_THRESHOLDS) -> dict:
    """COCO's box AP / AP50 / AP75 (percent; area "all", ``max_dets`` per image and class), without pycocotools."""
    thresholds = torch.tensor(iou_thresholds, dtype=torch.float64)
    # COCOeval's recall points: np.linspace(0, 1, 101) is arange(101) * 0.01 with the last set to exactly 1.
    rec_points = torch.arange(101, dtype=torch.float64) * 0.01
    rec_points[-1] = 1.0
    precision = torch.full((len(thresholds), num_classes), -1.0, dtype=torch.float64)  # (T, K); -1: no boxes
    for k, cls in enumerate(range(1, num_classes + 1)):
        scores, matched, ignored, npig = [], [], [], 0
        for p, g in zip(preds, gts):
            keep = g["labels"] == cls
            gb, gi = g["boxes"][keep].double(), g["ignore"][keep].bool()
            npig += int((~gi).sum())
            mine = p["labels"] == cls
            s, m, i = _coco_match(p["boxes"][mine].double(), p["scores"][mine].double(), gb, gi, thresholds,
                                  max_dets)
            scores.append(s)
            matched.append(m)
            ignored.append(i)
        if npig == 0:
            continue
        s = torch.cat(scores)
        order = torch.argsort(-s, stable=True)
        m, i = torch.cat(matched, 1)[:, order], torch.cat(ignored, 1)[:, order]  # (T, D)
        tp = torch.cumsum((m & ~i).double(), 1)
        fp = torch.cumsum((~m & ~i).double(), 1)
        for ti in range(len(thresholds)):
            n = tp.shape[1]
            if n == 0:
                precision[ti, k] = 0.0
                continue
            rc = tp[ti] / npig
            pr = tp[ti] / (fp[ti] + tp[ti] + _EPS)
            pr = torch.flip(torch.cummax(torch.flip(pr, [0]), 0).values, [0])
            idx = torch.searchsorted(rc, rec_points, side="left")
            q = torch.where(idx < n, pr[idx.clamp(max=n - 1)], torch.zeros_like(rec_points))
            precision[ti, k] = q.mean()
    return _summarise(precision, thresholds)


def _summarise(precision: torch.Tensor, thresholds: torch.Tensor) -> dict:
    """(T, K) mean interpolated precision -> percent AP over all thresholds, at 0.5 and at 0.75."""
    def mean_valid(x):
        valid = x[x > -1]
        return 100 * float(valid.mean()) if len(valid) else float("nan")

    out = {"AP": mean_valid(precision)}
    for name, t in (("AP50", 0.5), ("AP75", 0.75)):
        hit = torch.nonzero(torch.isclose(thresholds, torch.tensor(t, dtype=thresholds.dtype))).flatten()
        out[name] = mean_valid(precision[hit]) if len(hit) else float("nan")
    return out


# --------------------------------------------------------------------------------------------------------
# COCO, with pycocotools
# --------------------------------------------------------------------------------------------------------

def pycocotools_available() -> bool:
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        return False
    return True


def detections_to_coco(preds: Sequence[dict], image_ids: Sequence[int | str] | None = None,
                       category_ids: Sequence[int] | None = None) -> list[dict]:
    """COCO result records (``bbox`` as x, y, w, h; ``segmentation`` RLE when a prediction carries ``rles``).

    ``image_ids[i]`` is the COCO id of image ``i``; ``category_ids[c - 1]`` that of class ``c``.
    """
    out = []
    for i, p in enumerate(preds):
        img = int(image_ids[i]) if image_ids is not None else i
        rles = p.get("rles")
        for j, (b, s, c) in enumerate(zip(p["boxes"].double().tolist(), p["scores"].tolist(), p["labels"].tolist())):
            rec = {"image_id": img, "category_id": int(category_ids[c - 1]) if category_ids else int(c),
                   "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": float(s)}
            if rles is not None:
                rec["segmentation"] = rles[j]
            out.append(rec)
    return out


def pycocotools_ap(coco_gt, results: list[dict], iou_type: str = "bbox", img_ids: list | None = None) -> dict:
    """COCOeval's AP / AP50 / AP75 (percent) of ``results`` against ``coco_gt`` (a pycocotools ``COCO``);
    ``img_ids`` limits it to those images (the test images that could be read)."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its whole table
        coco_dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": 100 * float(ev.stats[0]), "AP50": 100 * float(ev.stats[1]), "AP75": 100 * float(ev.stats[2])}
