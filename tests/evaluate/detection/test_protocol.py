"""The detection protocol end to end: schedules, predictions, `barlowtwins detect` from every backbone source, bad
input, 2 processes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from conftest import free_port
from detection_shapes import make_coco_shapes, make_voc_shapes

from barlowtwins.cli import main
from barlowtwins.evaluate.detection.data import voc_detection
from barlowtwins.evaluate.detection.model import build_detector
from barlowtwins.evaluate.detection.protocol import DetectionRun, predict, standard_schedule
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.save import backbone_state

TINY = ["--backbone", "resnet18", "--width", "4", "--iterations", "2", "--batch-size", "2", "--min-size", "48",
        "--max-size", "64", "--workers", "0", "--log-every", "1", "--rois-per-image", "32"]


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




def _detect_worker(rank: int, world: int, port: int, argv: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    assert main(argv) == 0


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


def test_detect_under_two_processes_with_sync_bn(tmp_path):
    root = make_voc_shapes(tmp_path / "voc", n_trainval=4, n_test=2)
    out = tmp_path / "dist.json"
    argv = ["detect", "--random-init", "--dataset", "voc", "--data-dir", str(root), "--train-sets", "2007-trainval",
            *TINY, "--device", "cpu", "--output", str(out)]
    mp.spawn(_detect_worker, args=(2, free_port(), argv), nprocs=2, join=True)
    rec = json.loads(out.read_text())
    hp = rec["hyperparameters"]
    assert hp["world_size"] == 2 and hp["bn"] == "SyncBatchNorm"
    assert rec["num_test"] == 2 and all(0.0 <= v <= 100.0 for v in rec["metrics"].values())
