"""Every command that writes a file checks, before any work, that it can: an output under a file, a name over 255
bytes (its temporary name included) or an existing folder is one line and exit 2, with no feature extracted and
nothing trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import make_image_folder

from barlowtwins.cli import main
from barlowtwins.errors import ConfigError
from barlowtwins.runtime.files import NAME_MAX, check_writable, temp_name

ARCH = ["--random-init", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--image-size", "16",
        "--workers", "0", "--device", "cpu"]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command extracts features or trains before it has checked its output."""
    def forbidden(*a, **k):
        raise AssertionError("work started before the output was checked")

    for target in ("barlowtwins.evaluate.features.extract_features",
                   "barlowtwins.evaluate.features.extract_features_kept", "barlowtwins.cli.embed.extract_features_kept",
                   "barlowtwins.evaluate.protocols.train_classifier", "barlowtwins.evaluate.protocols.voc07_svm_map",
                   "barlowtwins.cli.neighbors.embed_image_files"):
        monkeypatch.setattr(target, forbidden)


def _outputs(tmp_path):
    (tmp_path / "plain").write_text("a file, not a folder")
    (tmp_path / "folder.json").mkdir()
    return {"under_a_file": str(tmp_path / "plain" / "r.json"),
            "long_folder": str(tmp_path / ("d" * 256) / "r.json"),
            "long_file": str(tmp_path / ("r" * 240 + ".json")),  # fits, but its temporary name does not
            }


def _one_line_exit_2(argv, capsys, word):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and word in err, err


@pytest.mark.parametrize("where", ["under_a_file", "long_folder", "long_file"])
@pytest.mark.parametrize("command", ["knn", "linear", "finetune", "transfer"])
def test_an_evaluation_output_that_cannot_be_written_fails_first(command, where, tmp_path, capsys, no_work):
    tree = make_image_folder(tmp_path / "imgs", per_class=2, size=16)
    data = ["--dataset", "folder", "--data-dir", str(tree)]
    _one_line_exit_2([command, *data, "--output", _outputs(tmp_path)[where], *ARCH], capsys, "--output")


def test_knn_compare_random_checks_the_baselines_file_too(run_dir, tmp_path, capsys, no_work):
    """--output FILE with --compare-random: the baseline goes to FILE-random.json (not over FILE), and a name that
    fits for FILE but not with -random fails at once."""
    tree = make_image_folder(tmp_path / "imgs", per_class=2, size=16)
    overhead = len(temp_name(Path("x.json")).name) - len("x.json")
    out = tmp_path / ("r" * (NAME_MAX - overhead - 3 - len(".json")) + ".json")  # fits with 3 bytes to spare
    check_writable(out)
    with pytest.raises(ConfigError):
        check_writable(out.with_name(out.stem + "-random.json"))
    _one_line_exit_2(["knn", "--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(tree),
                      "--output", str(out), "--compare-random", "--workers", "0", "--device", "cpu"], capsys,
                     "--output")


def test_knn_compare_random_to_a_file_keeps_both_results(run_dir, tmp_path, capsys):
    tree = make_image_folder(tmp_path / "imgs", per_class=2, size=16)
    out = tmp_path / "res" / "knn.json"
    assert main(["knn", "--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(tree), "--k", "3",
                 "--output", str(out), "--compare-random", "--workers", "0", "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["random_init"] is False
    assert json.loads((tmp_path / "res" / "knn-random.json").read_text())["random_init"] is True


@pytest.mark.parametrize("name", ["plain/emb.npy", "d" * 256 + "/emb.npy", "index_too_long"])
def test_embed_checks_all_three_files_it_writes(name, run_dir, tmp_path, capsys, no_work):
    """The last name fits as .npy (3 bytes to spare) but its index (.index.csv, 6 bytes longer) does not."""
    tree = make_image_folder(tmp_path / "imgs", per_class=1, splits=("train",), size=16)
    (tmp_path / "plain").write_text("x")
    if name == "index_too_long":
        overhead = len(temp_name(Path("x.npy")).name) - len("x.npy")
        name = "e" * (NAME_MAX - overhead - 3 - len(".npy")) + ".npy"
        check_writable(tmp_path / name)
    _one_line_exit_2(["embed", "--checkpoint", str(run_dir), "--data-dir", str(tree), "--output",
                      str(tmp_path / name), "--index-format", "csv", "--device", "cpu", "--workers", "0"],
                     capsys, "--output")


def test_neighbors_checks_its_sheet_first(run_dir, tmp_path, capsys, monkeypatch):
    tree = make_image_folder(tmp_path / "imgs", per_class=1, splits=("train",), size=16)
    assert main(["embed", "--checkpoint", str(run_dir), "--data-dir", str(tree), "--output",
                 str(tmp_path / "emb.npy"), "--index-format", "csv", "--device", "cpu", "--workers", "0"]) == 0
    capsys.readouterr()

    def forbidden(*a, **k):
        raise AssertionError("work started before the sheet was checked")

    monkeypatch.setattr("barlowtwins.cli.neighbors.embed_image_files", forbidden)
    (tmp_path / "plain").write_text("x")
    query = str(next((tree / "train" / "cat").iterdir()))
    for sheet in (tmp_path / "plain" / "s.png", tmp_path / ("s" * 300 + ".png")):
        _one_line_exit_2(["neighbors", "--embeddings", str(tmp_path / "emb.npy"), "--query", query, "--sheet",
                          str(sheet), "--device", "cpu"], capsys, "--sheet")


def test_check_writable_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "r.json"
    assert check_writable(target) == target
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "x.json").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        check_writable(tmp_path / "x.json")
