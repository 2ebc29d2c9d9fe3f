"""What the evaluation commands share (`cli.common`): messages kept on one line, the data set and split taken
from the flags or the pretraining run, the backbone the flags describe, --strict-data, the one line naming the
skipped files, and the process group left on every exit path."""

import argparse

import pytest

from barlowtwins.cli import build_parser, common
from barlowtwins.data.datasets import DATASETS, build_dataset
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.protocols import LINEAR_PROTOCOLS
from barlowtwins.runtime import distributed as D


def test_printable_keeps_a_message_on_one_line():
    assert common.printable("bad\nname\t.jpg") == "bad\\nname\\t.jpg"
    assert common.printable("café ✓ ok") == "café ✓ ok"  # printable characters kept as they are


def test_the_labelled_data_sets_are_the_evaluation_choices():
    names = common.labelled_datasets()
    assert "folder" in names and "images" not in names
    assert names == [n for n, spec in DATASETS.items() if spec.labelled]


def _data_args(**kw):
    return argparse.Namespace(**{**dict(dataset=None, data_dir=None, val_split=None), **kw})


def test_the_data_comes_from_the_flags_else_the_pretraining_run():
    run = {"dataset": "fashion-mnist", "data_dir": "/data/fm"}
    assert common.resolve_data(_data_args(), run) == ("fashion-mnist", "/data/fm", "test")
    assert common.resolve_data(_data_args(data_dir="/elsewhere"), run) == ("fashion-mnist", "/elsewhere", "test")
    # another data set named: the run's folder is not taken for it
    assert common.resolve_data(_data_args(dataset="folder"), run) == ("folder", None, "val")
    assert common.resolve_data(_data_args(dataset="folder", val_split="holdout"), run)[2] == "holdout"


@pytest.mark.parametrize("arch", [None, {"dataset": "images", "data_dir": "/photos"}])
def test_without_a_labelled_data_set_it_says_which_to_name(arch):
    with pytest.raises(ConfigError, match=r"name a labelled data set: --dataset .*folder.* \(with --data-dir"):
        common.resolve_data(_data_args(), arch)


def test_the_backbone_the_flags_describe(run_dir):
    args = build_parser().parse_args(["knn", "--checkpoint", str(run_dir), "--device", "cpu", "--image-size", "24"])
    setup = common.setup_backbone(args)
    assert setup.arch["width"] == 8 and setup.image_size == 24 and setup.loaded_keys > 0
    assert setup.cache_dir == str(run_dir / "eval" / "cache")
    args = build_parser().parse_args(["knn", "--checkpoint", str(run_dir), "--device", "cpu", "--no-cache",
                                      "--random-init"])
    setup = common.setup_backbone(args)
    assert setup.cache_dir is None and setup.loaded_keys == 0


def test_strict_data_refuses_an_unreadable_file_and_otherwise_nothing_is_checked(image_tree):
    (image_tree / "val" / "cat" / "cat_0.jpg").write_bytes(b"\xff\xd8\xff\xe0 garbage")
    ds = build_dataset("folder", str(image_tree), "val")
    common.check_data(argparse.Namespace(strict_data=False), ds)
    common.check_data(argparse.Namespace(), ds)  # a command without the flag
    with pytest.raises(DataError, match="cat_0.jpg"):
        common.check_data(argparse.Namespace(strict_data=True), ds)


def test_skipped_files_are_named_in_one_warning_line(capsys):
    common.report_skipped([])
    assert capsys.readouterr().err == ""
    common.report_skipped([{"file": "a\nb.jpg", "reason": "truncated"}, {"file": "c.png", "reason": "not an image"}])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: skipped 2 unreadable files: a\\nb.jpg (truncated), "
                                                   "c.png (not an image)")


def test_the_process_group_is_left_on_every_exit_path(monkeypatch):
    left = []
    monkeypatch.setattr(D, "shutdown", lambda: left.append(True))

    @common.leaves_process_group
    def run(args):
        if args.fail:
            raise DataError("no images")
        return 0

    assert run(argparse.Namespace(fail=False)) == 0 and left == [True]
    with pytest.raises(DataError):
        run(argparse.Namespace(fail=True))
    assert left == [True, True] and run.__name__ == "run"


def test_the_linear_protocol_flags_offer_every_registered_protocol():
    p = argparse.ArgumentParser()
    common.add_linear_protocol_args(p.add_argument_group("protocol"))
    assert p.parse_args([]).protocol == "fast" and p.parse_args([]).epochs is None
    for name in LINEAR_PROTOCOLS:
        assert p.parse_args(["--protocol", name]).protocol == name
    with pytest.raises(SystemExit):
        p.parse_args(["--protocol", "nope"])
