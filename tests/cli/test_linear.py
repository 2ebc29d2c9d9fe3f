"""`barlowtwins linear`: the fast protocol on a run folder's frozen backbone, its result file, the random-init
baseline's own file, and one-line errors."""

import json

from barlowtwins.cli import main

LINEAR = ["linear", "--dataset", "folder", "--workers", "0", "--device", "cpu"]


def test_linear_fast_writes_its_result_with_the_grid_it_searched(run_dir, image_tree, capsys):
    assert main([*LINEAR, "--checkpoint", str(run_dir), "--data-dir", str(image_tree), "--epochs", "3",
                 "--lrs", "0.1", "1", "--wds", "0", "--holdout", "0.25"]) == 0
    out = capsys.readouterr().out
    rec = json.loads((run_dir / "eval" / "linear-fast-folder.json").read_text())
    assert rec["protocol"] == "linear-fast" and rec["split"] == "val" and 0 <= rec["metrics"]["top1"] <= 100
    hp = rec["hyperparameters"]
    assert len(hp["grid"]) == 2 and hp["holdout"] == 0.25 and hp["flip"] is False
    assert "linear (fast) folder val: " in out and "linear-fast-folder.json" in out


def test_the_random_init_baseline_has_its_own_file(run_dir, image_tree, capsys):
    assert main([*LINEAR, "--checkpoint", str(run_dir), "--data-dir", str(image_tree), "--epochs", "2",
                 "--random-init"]) == 0
    rec = json.loads((run_dir / "eval" / "linear-fast-folder-random.json").read_text())
    assert rec["random_init"] is True and not (run_dir / "eval" / "linear-fast-folder.json").exists()


def test_a_missing_data_folder_is_one_line_before_any_work(run_dir, tmp_path, capsys):
    assert main([*LINEAR, "--checkpoint", str(run_dir), "--data-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins linear: error: ") and "does not exist" in err and len(err.splitlines()) == 1
    assert not (run_dir / "eval" / "linear-fast-folder.json").exists()
