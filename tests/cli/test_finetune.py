"""`barlowtwins finetune`: fine-tuning on a labelled subset (class-balanced, or a list file), the subset saved
beside the result, the random-init baseline's own files, and one-line errors before any training."""

import argparse
import json

import pytest

from barlowtwins.cli import main
from barlowtwins.cli.finetune import choose_subset
from barlowtwins.data.datasets import labelled_folder
from barlowtwins.errors import DataError

FINETUNE = ["finetune", "--dataset", "folder", "--workers", "0", "--device", "cpu", "--epochs", "1",
            "--batch-size", "4"]


def test_a_balanced_subset_is_fine_tuned_and_saved_beside_the_result(run_dir, image_tree, capsys):
    assert main([*FINETUNE, "--checkpoint", str(run_dir), "--data-dir", str(image_tree),
                 "--train-percent", "34"]) == 0
    out = capsys.readouterr().out
    assert "fine-tuning on 4 of 12 labelled images: class-balanced 34.0% (seed 0)" in out  # 2 of 6 per class
    rec = json.loads((run_dir / "eval" / "finetune-folder-34pct.json").read_text())
    assert rec["protocol"] == "finetune" and rec["hyperparameters"]["num_train"] == 4
    listed = (run_dir / "eval" / "finetune-folder-34pct.subset.txt").read_text().split()
    assert len(listed) == 4 and sum(n.startswith("cat") for n in listed) == 2


def test_a_subset_file_chooses_the_images(run_dir, image_tree, tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("cat_0.jpg\ndog_1.png\ndog_2.jpg\n")
    assert main([*FINETUNE, "--checkpoint", str(run_dir), "--data-dir", str(image_tree), "--subset-file",
                 str(tmp_path / "mine.txt"), "--random-init", "--output", str(tmp_path / "res")]) == 0
    assert f"fine-tuning on 3 of 12 labelled images: list file {tmp_path / 'mine.txt'}" in capsys.readouterr().out
    assert (tmp_path / "res" / "finetune-folder-1pct-random.json").is_file()  # --random-init: its own name
    assert sorted((tmp_path / "res" / "finetune-folder-1pct-random.subset.txt").read_text().split()) == \
        ["cat_0.jpg", "dog_1.png", "dog_2.jpg"]


def _args(**kw):
    return argparse.Namespace(**{**dict(subset_file=None, subset="auto", train_percent=1.0), **kw})


def test_the_standard_lists_are_1_and_10_percent_only(image_tree):
    train = labelled_folder(image_tree, "train")
    with pytest.raises(DataError, match="the standard ImageNet subsets are 1% and 10%; got --train-percent 5"):
        choose_subset(_args(subset="standard", train_percent=5.0), train, 0)
    idx, how = choose_subset(_args(train_percent=50.0), train, 3)  # not ImageNet: balanced
    assert len(idx) == 6 and how == "class-balanced 50.0% (seed 3)"
    assert choose_subset(_args(train_percent=50.0), train, 3)[0].tolist() == idx.tolist()  # seeded


@pytest.mark.parametrize("args, message", [
    (["--train-percent", "0"], "--train-percent must be in (0, 100]"),
    (["--subset-file", "{tmp}/none.txt"], "subset file {tmp}/none.txt does not exist"),
    (["--subset", "standard"], "are not in the data set"),
])
def test_a_subset_that_cannot_be_made_is_one_line_exit_2(run_dir, image_tree, tmp_path, capsys, args, message):
    argv = [*FINETUNE, "--checkpoint", str(run_dir), "--data-dir", str(image_tree),
            *[a.format(tmp=tmp_path) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(tmp=tmp_path) in err, err
    assert not any((run_dir / "eval").glob("finetune-*"))
