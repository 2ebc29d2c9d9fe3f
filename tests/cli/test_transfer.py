"""`barlowtwins transfer`: a linear probe on frozen features of any labelled folder (the data set's own split
names), its result file, and one-line errors for data in the wrong layout."""

import json

import pytest

from barlowtwins.cli import main

TRANSFER = ["transfer", "--workers", "0", "--device", "cpu"]


def test_transfer_to_a_labelled_folder(run_dir, image_tree, capsys):
    assert main([*TRANSFER, "--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    rec = json.loads((run_dir / "eval" / "transfer-linear-fast-folder.json").read_text())
    assert rec["protocol"] == "transfer-linear-fast" and rec["dataset"] == "folder" and rec["split"] == "val"
    assert 0 <= rec["metrics"]["top1"] <= 100 and rec["backbone"]["width"] == 8
    assert "transfer (transfer-linear-fast) folder val: " in out


def test_other_split_names_are_taken(run_dir, image_tree, tmp_path, capsys):
    (image_tree / "val").rename(image_tree / "holdout")
    out = tmp_path / "t.json"
    assert main([*TRANSFER, "--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--val-split", "holdout", "--epochs", "1", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["split"] == "holdout"


@pytest.mark.parametrize("dataset, message", [("folder", "empty/train does not exist"),
                                              ("voc2007", "no VOC2007 layout under"),
                                              ("inat2018", "train2018.json not found"),
                                              ("places205", "train_places205.csv not found")])
def test_a_folder_not_in_the_data_sets_layout_is_one_line_exit_2(run_dir, tmp_path, capsys, dataset, message):
    (tmp_path / "empty").mkdir()
    assert main([*TRANSFER, "--checkpoint", str(run_dir), "--dataset", dataset, "--data-dir",
                 str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins transfer: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (run_dir / "eval").exists()
