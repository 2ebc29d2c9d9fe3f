"""One class-to-index map per evaluation: a validation split that lacks a training class (or has one training
lacks) is scored with the training split's numbering, on real JPEG/PNG folders, never silently shifted."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import make_image_folder

from barlowtwins.cli import main
from barlowtwins.data.datasets import labelled_folder
from barlowtwins.evaluate.backbone import load_eval_backbone
from barlowtwins.evaluate.knn import knn_evaluate
from barlowtwins.evaluate.linear import fast_linear_probe

ARCH = ["--random-init", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--image-size", "16",
        "--workers", "0", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """full: train and val a/b/c; missing: val without a; extra: val with a class d that training lacks."""
    root = tmp_path_factory.mktemp("classes")
    full = make_image_folder(root / "full", classes=("a", "b", "c"), per_class=6)
    missing = root / "missing"
    shutil.copytree(full, missing)
    shutil.rmtree(missing / "val" / "a")
    extra = root / "extra"
    shutil.copytree(full, extra)
    shutil.copytree(full / "val" / "c", extra / "val" / "d")  # images of c filed as d: never predicted as d
    return {"full": full, "missing": missing, "extra": extra}


@pytest.fixture(scope="module")
def reference(folders):
    """Features of the full folder and its correct labels, with the network the commands build."""
    setup = load_eval_backbone(None, random_init=True, backbone="resnet18", stem="small", width=8, image_size=16,
                               device="cpu", precision="fp32", cache_dir=None)
    train = labelled_folder(folders["full"], "train")
    val = labelled_folder(folders["full"], "val")
    ftr, ytr = setup.features(train, "folder", "train", workers=0)
    fva, yva = setup.features(val, "folder", "val", workers=0)
    return ftr, ytr, fva, yva


def _run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured


def test_knn_with_a_validation_class_missing_scores_as_with_it_present(folders, reference, tmp_path, capsys):
    ftr, ytr, fva, yva = reference
    present = yva != 0  # the images of b and c
    want = knn_evaluate(ftr, ytr, fva[present], yva[present], 3, ks=(20,))["k=20"]["top1"]
    assert want > 50  # colour-separable classes: a shifted numbering would score near 0
    out = tmp_path / "knn.json"
    captured = _run(["knn", "--dataset", "folder", "--data-dir", str(folders["missing"]), "--k", "20",
                     "--output", str(out), *ARCH], capsys)
    rec = json.loads(out.read_text())
    assert rec["metrics"]["k=20"]["top1"] == pytest.approx(want)
    assert rec["classes"] == ["a", "b", "c"] and rec["class_mismatch"]["only_train"] == ["a"]
    warnings = [ln for ln in captured.err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "'a'" in warnings[0] and "val" in warnings[0]


def test_linear_with_a_validation_class_missing_scores_as_with_it_present(folders, reference, tmp_path, capsys):
    ftr, ytr, fva, yva = reference
    present = yva != 0
    want = fast_linear_probe(ftr, ytr, fva[present], yva[present], 3, epochs=5).top1
    assert want > 50
    out = tmp_path / "linear.json"
    captured = _run(["linear", "--dataset", "folder", "--data-dir", str(folders["missing"]), "--epochs", "5",
                     "--output", str(out), *ARCH], capsys)
    rec = json.loads(out.read_text())
    assert rec["metrics"]["top1"] == pytest.approx(want) and rec["classes"] == ["a", "b", "c"]
    assert any(ln.startswith("warning:") and "'a'" in ln for ln in captured.err.splitlines())


def test_a_validation_class_training_lacks_is_scored_wrong_and_said(folders, reference, tmp_path, capsys):
    ftr, ytr, fva, yva = reference
    n_d = int((yva == 2).sum())  # d holds copies of c's images
    correct = knn_evaluate(ftr, ytr, fva, yva, 3, ks=(20,))["k=20"]["top1"] * len(yva) / 100
    out = tmp_path / "knn.json"
    captured = _run(["knn", "--dataset", "folder", "--data-dir", str(folders["extra"]), "--k", "20",
                     "--output", str(out), *ARCH], capsys)
    rec = json.loads(out.read_text())
    assert rec["metrics"]["k=20"]["top1"] == pytest.approx(100 * correct / (len(yva) + n_d))
    mismatch = rec["class_mismatch"]
    assert mismatch["only_eval"] == ["d"] and mismatch["unscorable_images"] == n_d
    assert mismatch["scored_as"] == "wrong" and rec["classes"] == ["a", "b", "c"]
    warnings = [ln for ln in captured.err.splitlines() if ln.startswith("warning:")]
    assert len(warnings) == 1 and "'d'" in warnings[0] and "scored as wrong" in warnings[0]


def test_finetune_numbers_validation_classes_as_training_does(folders, tmp_path, capsys):
    out = tmp_path / "ft.json"
    captured = _run(["finetune", "--dataset", "folder", "--data-dir", str(folders["missing"]), "--epochs", "1",
                     "--batch-size", "4", "--train-percent", "50", "--output", str(out), *ARCH], capsys)
    rec = json.loads(out.read_text())
    assert rec["classes"] == ["a", "b", "c"] and rec["class_mismatch"]["only_train"] == ["a"]
    assert any(ln.startswith("warning:") and "'a'" in ln for ln in captured.err.splitlines())


def test_transfer_folder_uses_the_training_numbering(folders, tmp_path, capsys):
    out = tmp_path / "tr.json"
    _run(["transfer", "--dataset", "folder", "--data-dir", str(folders["missing"]), "--epochs", "2",
          "--output", str(out), *ARCH], capsys)
    rec = json.loads(out.read_text())
    assert rec["classes"] == ["a", "b", "c"] and rec["class_mismatch"]["only_train"] == ["a"]
