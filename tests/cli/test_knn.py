"""`barlowtwins knn`: weighted kNN of a run folder's backbone on a labelled folder, its result file (and the
random-init baseline's beside it), and one-line errors before any work."""

import argparse
import json
from pathlib import Path

import pytest

from barlowtwins.cli import main
from barlowtwins.cli.knn import knn_result_path

KNN = ["knn", "--dataset", "folder", "--workers", "0", "--device", "cpu"]


def test_knn_on_a_run_folder_writes_its_result_in_the_runs_eval_folder(run_dir, image_tree, capsys):
    assert main([*KNN, "--checkpoint", str(run_dir), "--data-dir", str(image_tree), "--k", "1", "5"]) == 0
    out = capsys.readouterr().out
    rec = json.loads((run_dir / "eval" / "knn-folder.json").read_text())
    assert rec["protocol"] == "knn" and rec["split"] == "val" and rec["num_test"] == 12
    assert set(rec["metrics"]) == {"k=1", "k=5"} and all(0 <= m["top1"] <= 100 for m in rec["metrics"].values())
    assert rec["backbone"] == {"backbone": "resnet18", "stem": "small", "width": 8} and rec["image_size"] == 16
    assert "kNN folder val (pretrained): " in out and str(run_dir / "eval" / "knn-folder.json") in out


def test_compare_random_puts_the_baseline_beside_an_output_file(run_dir, image_tree, tmp_path, capsys):
    out = tmp_path / "res" / "mine.json"
    assert main([*KNN, "--checkpoint", str(run_dir), "--data-dir", str(image_tree), "--k", "3", "--compare-random",
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    pretrained, baseline = json.loads(out.read_text()), json.loads((tmp_path / "res" / "mine-random.json").read_text())
    assert pretrained["random_init"] is False and baseline["random_init"] is True
    a, b = pretrained["metrics"]["k=3"]["top1"], baseline["metrics"]["k=3"]["top1"]
    assert f"kNN k=3 top-1: pretrained {a:.2f} vs random init {b:.2f} ({a - b:+.2f} points)" in printed


def _args(**kw):
    base = dict(checkpoint="runs/a", output=None, compare_random=False)
    return argparse.Namespace(**{**base, **kw})


def test_where_the_results_go():
    assert knn_result_path(_args(output="r.json"), "folder", False) == Path("r.json")
    assert knn_result_path(_args(output="r.json", compare_random=True), "folder", True) == Path("r-random.json")
    baseline = knn_result_path(_args(output="res", compare_random=True), "folder", True)
    assert baseline == Path("res/knn-folder-random.json")  # a folder: the baseline's own name in it
    assert knn_result_path(_args(output="res"), "cifar10", False) == Path("res/knn-cifar10.json")


def test_a_run_on_unlabelled_images_needs_a_labelled_data_set(run_dir, capsys):
    # the run_dir fixture's pretraining data set is "images": no labels for a kNN
    assert main(["knn", "--checkpoint", str(run_dir), "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins knn: error: name a labelled data set: --dataset ") and "folder" in err
    assert not (run_dir / "eval").exists()


@pytest.mark.parametrize("args, message", [
    (["--data-dir", "{tmp}/nope"], "does not exist"),
    (["--data-dir", "{tree}", "--output", "{tmp}/r.txt"], "a result is a JSON file: name it r.json"),
    (["--data-dir", "{tree}", "--val-split", "test"], "images/test does not exist"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_dir, image_tree, tmp_path, capsys, args, message):
    argv = [*KNN, "--checkpoint", str(run_dir), *[a.format(tmp=tmp_path, tree=image_tree) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (run_dir / "eval" / "knn-folder.json").exists()
