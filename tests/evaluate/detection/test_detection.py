"""Object-detection transfer: AP against hand-computed cases and pycocotools, the VOC/COCO readers on files the
tests write, the C4 detector's weights, `barlowtwins detect` from every backbone source, bad input, and a
2-process (gloo) run."""

from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from detection_data import SHAPE_CLASSES, coco_from_targets, make_coco_shapes, make_voc_shapes

from barlowtwins.cli import main
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.detection.ap import (
    coco_detection_ap,
    detections_to_coco,
    pycocotools_ap,
    voc_ap,
    voc_detection_ap,
)
from barlowtwins.evaluate.detection.data import coco_detection, hflip, parse_voc_sets, voc_detection
from barlowtwins.evaluate.detection.model import C4Trunk, build_detector
from barlowtwins.evaluate.detection.protocol import DetectionRun, predict, standard_schedule
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.save import backbone_state
from barlowtwins.weights.sources import load_backbone_state, load_backbone_weights

TINY = ["--backbone", "resnet18", "--width", "4", "--iterations", "2", "--batch-size", "2", "--min-size", "48",
        "--max-size", "64", "--workers", "0", "--log-every", "1", "--rois-per-image", "32"]


def _pred(boxes, scores, labels):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes, labels, ignore=None):
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "ignore": torch.tensor(ignore if ignore is not None else [False] * len(labels), dtype=torch.bool)}


# --------------------------------------------------------------------------------------------------------
# AP
# --------------------------------------------------------------------------------------------------------

def _voc_case(second_hit):
    # Image A: g1 (regular) and g2 (difficult); image B: g3. Detections by falling score:
    # d1 = g1 (TP), d2 = g2 (difficult: ignored), d3 = g1 again (duplicate: FP), d4 nowhere (FP), d5 on g3.
    gts = [_gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1], [False, True]), _gt([[0, 0, 10, 10]], [1])]
    preds = [_pred([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 10, 10]], [0.9, 0.8, 0.7], [1, 1, 1]),
             _pred([[50, 50, 60, 60], second_hit], [0.6, 0.5], [1, 1])]
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


# --------------------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------------------

def test_voc_reader_boxes_difficult_and_sets(tmp_path):
    root = make_voc_shapes(tmp_path / "voc", n_trainval=4, n_test=3, year="2007")
    make_voc_shapes(tmp_path / "voc", n_trainval=3, n_test=0, year="2012", seed=5)
    train = voc_detection(root, "2007-trainval,2012-trainval", train=True)
    test = voc_detection(root, "2007-test")
    assert len(train) == 7 and len(test) == 3 and train.num_classes == 20
    # The XML says xmin/ymin 1-based inclusive: the reader gives [xmin - 1, xmax).
    import xml.etree.ElementTree as ET

    rec = test.records[0]
    xml = ET.parse(root / "VOCdevkit/VOC2007/Annotations" / f"{rec.image_id.split('/')[1]}.xml").getroot()
    bb = xml.find("object/bndbox")
    assert rec.boxes[0] == [float(bb.findtext("xmin")) - 1, float(bb.findtext("ymin")) - 1,
                            float(bb.findtext("xmax")), float(bb.findtext("ymax"))]
    assert rec.labels[0] == 1 + ("aeroplane", "bicycle", "bird").index(xml.findtext("object/name"))
    all_ignore = [i for r in train.records + test.records for i in r.ignore]
    assert any(all_ignore) and not all(all_ignore)  # difficult objects are read, and kept
    image, target = test[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and target["boxes"].dtype == torch.float32
    assert parse_voc_sets("2007-trainval, 2012-trainval") == [("2007", "trainval"), ("2012", "trainval")]
    with pytest.raises(ConfigError):
        parse_voc_sets("trainval")
    with pytest.raises(DataError, match="no VOC2012"):
        voc_detection(make_voc_shapes(tmp_path / "only07", 1, 1), "2012-trainval")


def test_coco_reader_ids_crowd_and_masks(tmp_path):
    pytest.importorskip("pycocotools")
    root = make_coco_shapes(tmp_path / "coco", n_train=4, n_val=2)
    train = coco_detection(root / "annotations/instances_train2017.json", root / "train2017", train=True, masks=True)
    val = coco_detection(root / "annotations/instances_val2017.json", root / "val2017", masks=True)
    assert train.classes == ["bird", "aeroplane", "bicycle"]  # categories sorted by id (2, 5, 9)
    assert train.category_ids == [2, 5, 9]
    data = json.loads((root / "annotations/instances_val2017.json").read_text())
    assert not any(any(r.ignore) for r in train.records)  # crowd boxes are left out of training...
    assert any(val.records[0].ignore)  # ...and kept (ignored) for the evaluation
    image, target = train[0]
    masks, boxes = target["masks"], target["boxes"]
    assert masks.shape == (len(boxes), *image.shape[1:]) and masks.dtype == torch.uint8
    for m, b in zip(masks, boxes):  # polygon and RLE masks both fill exactly their rectangle
        x0, y0, x1, y1 = (int(v) for v in b)
        assert int(m.sum()) == (x1 - x0) * (y1 - y0) and bool(m[y0:y1, x0:x1].all())
    assert val.records[0].image_id == data["images"][0]["id"]


def test_hflip_mirrors_boxes_and_masks():
    image = torch.zeros(3, 4, 10, dtype=torch.uint8)
    image[:, 1:3, 2:5] = 255
    masks = (image[:1] > 0).to(torch.uint8)
    target = {"boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0]]), "labels": torch.tensor([1]), "masks": masks}
    flipped, t = hflip(image, target)
    assert t["boxes"].tolist() == [[5.0, 1.0, 8.0, 3.0]]
    cols = torch.nonzero(flipped[0].sum(0)).flatten()
    assert (int(cols.min()), int(cols.max()) + 1) == (5, 8) and torch.equal(t["masks"][0], flipped[0] > 0)


# --------------------------------------------------------------------------------------------------------
# Model and schedule
# --------------------------------------------------------------------------------------------------------

def test_standard_schedule_scales_steps_and_warmup():
    s = standard_schedule("voc")
    assert (s.iterations, s.steps, s.warmup_iters, s.lr) == (24_000, (18_000, 22_000), 100, 0.02)
    c = standard_schedule("coco", batch_size=8)
    assert (c.iterations, c.steps, c.lr) == (90_000, (60_000, 80_000), 0.01)
    small = standard_schedule("voc", iterations=2400)
    assert small.steps == (1800, 2200) and small.warmup_iters == 10
    assert small.lr_at(0) == pytest.approx(0.02 * 0.001)
    assert small.lr_at(5) == pytest.approx(0.02 * (0.001 * 0.5 + 0.5))
    assert small.lr_at(10) == pytest.approx(0.02)
    assert small.lr_at(1800) == pytest.approx(0.002) and small.lr_at(2300) == pytest.approx(0.0002)


def backbone_modules(detector: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The detector's pieces that came from the backbone, under the backbone's names (``layer4`` included)."""
    body = detector.backbone
    if isinstance(body, C4Trunk):
        return {**dict(body.named_children()), "layer4": detector.roi_heads.box_head.layer4}
    return dict(body.body.named_children())  # FPN: an IntermediateLayerGetter over conv1 ... layer4


@pytest.mark.parametrize("task", ["detection", "instance-segmentation"])
def test_c4_detector_holds_the_checkpoint_weights(tmp_path, task):
    torch.manual_seed(3)
    net = create_backbone("resnet18", width=8)
    save_atomic(backbone_state(net), tmp_path / "backbone.pth")
    src = load_backbone_state(tmp_path / "backbone.pth")
    fresh = create_backbone("resnet18", width=8)
    load_backbone_weights(fresh, src)
    det = build_detector(fresh, num_classes=3, task=task, min_size=64, max_size=96)
    parts = backbone_modules(det)
    assert set(parts) == {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"}
    for name, module in parts.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, src.state[f"{name}.{key}"]), f"{name}.{key}"
    assert det.backbone.out_channels == 32  # layer3 of width 8: the RPN and RoIAlign read stride 16
    assert det.roi_heads.box_predictor.cls_score.in_features == 64  # layer4 + pooling per RoI
    assert all(p.requires_grad for p in det.parameters())  # every stage (and BN) trains
    if task == "instance-segmentation":
        assert det.roi_heads.mask_head is det.roi_heads.box_head.layer4  # the shared res5


def test_fpn_detector_and_a_non_resnet_is_refused():
    det = build_detector(create_backbone("resnet18", width=8), 2, head="fpn", min_size=64, max_size=96)
    assert set(backbone_modules(det)) >= {"conv1", "layer4"}
    with pytest.raises(ConfigError, match="ResNet"):
        build_detector(create_backbone("mobilenet_v3_small"), 2)


def test_predictions_are_cpu_tensors_of_fixed_dtypes(tmp_path):
    # The "device" path run with device=cpu: every output's device and dtype is checked.
    root = make_voc_shapes(tmp_path / "voc", n_trainval=1, n_test=2)
    test = voc_detection(root, "2007-test")
    torch.manual_seed(0)
    det = build_detector(create_backbone("resnet18", width=4), test.num_classes, min_size=48, max_size=64)
    det.roi_heads.score_thresh = 0.0  # keep whatever an untrained head proposes
    preds = predict(det, test, DetectionRun(schedule=standard_schedule("voc", 1), device=torch.device("cpu")))
    assert len(preds) == 2 and det.training  # the mode is restored
    for p in preds:
        assert p["boxes"].dtype == torch.float32 and p["scores"].dtype == torch.float32
        assert p["labels"].dtype == torch.int64 and all(t.device.type == "cpu" for t in p.values())


# --------------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------------

def _sources(tmp_path: Path) -> dict[str, list[str]]:
    """Every kind of backbone source the evaluation commands read, written here for a resnet18 of width 4."""
    torch.manual_seed(7)
    net = create_backbone("resnet18", width=4)
    run = tmp_path / "run"
    run.mkdir()
    save_atomic(backbone_state(net), run / "backbone.pth")  # our run folder: backbone.pth + config.yaml
    (run / "config.yaml").write_text(yaml.safe_dump({"backbone": "resnet18", "width": 4, "stem": "standard"}))
    tv = {k: v.clone() for k, v in net.state_dict().items()}  # torchvision-style: with the classifier's keys
    tv["fc.weight"], tv["fc.bias"] = torch.zeros(1000, net.num_features), torch.zeros(1000)
    torch.save(tv, tmp_path / "resnet18-tv.pth")
    official = {"epoch": 3, "model": {f"module.backbone.{k}": v for k, v in net.state_dict().items()}}
    torch.save(official, tmp_path / "official.pth")  # the official full training checkpoint
    return {"run-folder": ["--checkpoint", str(run)],
            "torchvision-state-dict": ["--checkpoint", str(tmp_path / "resnet18-tv.pth")],
            "official-checkpoint": ["--checkpoint", str(tmp_path / "official.pth")],
            "random-init": ["--random-init"]}


def test_detect_voc_from_every_backbone_source(tmp_path, capsys):
    root = make_voc_shapes(tmp_path / "voc", n_trainval=4, n_test=2)
    for name, source in _sources(tmp_path).items():
        out = tmp_path / f"{name}.json"
        code = main(["detect", *source, "--dataset", "voc", "--data-dir", str(root), "--train-sets", "2007-trainval",
                     *TINY, "--output", str(out)])
        assert code == 0, name
        rec = json.loads(out.read_text())
        assert rec["protocol"] == "detection" and rec["head"] == "c4" and rec["task"] == "detection"
        assert set(rec["metrics"]) == {"AP", "AP50", "AP75"}
        assert all(0.0 <= v <= 100.0 for v in rec["metrics"].values()), rec["metrics"]
        assert rec["random_init"] == (name == "random-init")
        assert (rec["checkpoint_sha256"] is None) == (name == "random-init")
        assert rec["hyperparameters"]["iterations"] == 2 and len(rec["hyperparameters"]["history"]) == 2
        assert math.isfinite(rec["hyperparameters"]["history"][-1]["loss"])
        assert "difficult objects ignored" in rec["evaluation"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("detect voc voc2007-test (C4, 2 it): AP ")


def test_detect_coco_instance_segmentation(tmp_path):
    pytest.importorskip("pycocotools")
    root = make_coco_shapes(tmp_path / "coco", n_train=4, n_val=2)
    out = tmp_path / "segm.json"
    assert main(["detect", "--random-init", "--dataset", "coco", "--data-dir", str(root),
                 "--task", "instance-segmentation", *TINY, "--output", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert set(rec["metrics"]) == {"AP", "AP50", "AP75", "mask_AP", "mask_AP50", "mask_AP75"}
    assert rec["task"] == "instance-segmentation" and "COCOeval" in rec["evaluation"]
    from barlowtwins.evaluate.results import find_results, markdown_table

    row = markdown_table(find_results([str(out)])).splitlines()[-1]  # `barlowtwins results` shows the box AP
    assert f"| {rec['metrics']['AP']:.2f} |" in row and "| detection |" in row


@pytest.mark.parametrize("case", ["no-voc", "no-2012", "empty-json", "segm-on-voc", "bad-iterations"])
def test_detect_bad_input_is_one_line_exit_2_before_any_work(tmp_path, capsys, case):
    voc = make_voc_shapes(tmp_path / "voc", n_trainval=1, n_test=1)
    (tmp_path / "coco/annotations").mkdir(parents=True)
    (tmp_path / "coco/train2017").mkdir()
    (tmp_path / "coco/val2017").mkdir()
    (tmp_path / "coco/annotations/instances_train2017.json").write_text("")
    (tmp_path / "coco/annotations/instances_val2017.json").write_text("")
    # A checkpoint that does not exist: the data (or flag) error must come first.
    base = ["detect", "--checkpoint", str(tmp_path / "missing.pth")]
    argv, expected = {
        "no-voc": (["--dataset", "voc", "--data-dir", str(tmp_path / "nothing")], "does not exist"),
        "no-2012": (["--dataset", "voc", "--data-dir", str(voc)], "no VOC2012"),
        "empty-json": (["--dataset", "coco", "--data-dir", str(tmp_path / "coco")], "not a COCO annotation file"),
        "segm-on-voc": (["--dataset", "voc", "--data-dir", str(voc), "--task", "instance-segmentation"],
                        "needs masks"),
        "bad-iterations": (["--dataset", "voc", "--data-dir", str(voc), "--iterations", "0"], "--iterations"),
    }[case]
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "missing.pth" not in err, err


def test_detect_unknown_task_is_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as e:
        main(["detect", "--random-init", "--dataset", "voc", "--data-dir", ".", "--task", "keypoints"])
    assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------------
# Two processes
# --------------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _detect_worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert main(argv) == 0


def test_detect_under_two_processes_with_sync_bn(tmp_path):
    root = make_voc_shapes(tmp_path / "voc", n_trainval=4, n_test=2)
    out = tmp_path / "dist.json"
    argv = ["detect", "--random-init", "--dataset", "voc", "--data-dir", str(root), "--train-sets", "2007-trainval",
            *TINY, "--device", "cpu", "--output", str(out)]
    mp.spawn(_detect_worker, args=(2, _free_port(), argv), nprocs=2, join=True)
    rec = json.loads(out.read_text())
    hp = rec["hyperparameters"]
    assert hp["world_size"] == 2 and hp["bn"] == "SyncBatchNorm"
    assert rec["num_test"] == 2 and all(0.0 <= v <= 100.0 for v in rec["metrics"].values())


def test_shape_classes_are_voc_names():
    from barlowtwins.data.transfer import VOC_CLASSES

    assert set(SHAPE_CLASSES) <= set(VOC_CLASSES)
