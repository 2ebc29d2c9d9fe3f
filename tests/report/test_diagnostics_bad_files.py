"""The report's collapse diagnostics skip unreadable images (counted, named once) instead of dropping the section;
``strict_data`` refuses them before anything is encoded."""

import numpy as np
import pytest
from conftest import make_image_folder, tiny_config

from barlowtwins.cli import main
from barlowtwins.errors import DataError
from barlowtwins.report.diagnostics import run_diagnostics
from barlowtwins.training.trainer import pretrain

pytest.importorskip("matplotlib")

BAD = ("cut_short.jpg", "noise.jpg")


@pytest.fixture(scope="module")
def run_with_bad_val(tmp_path_factory):
    root = tmp_path_factory.mktemp("diag")
    tree = make_image_folder(root / "jpegs", per_class=4)
    pretrain(tiny_config(tree, root / "run", dataset="folder", batch_size=4, epochs=1, workers=0))
    val = tree / "val" / "cat"
    data = next(iter(sorted(val.glob("*.jpg")))).read_bytes()
    (val / BAD[0]).write_bytes(data[: len(data) // 2])
    (val / BAD[1]).write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return root / "run"


def test_report_keeps_the_collapse_section_and_names_bad_files_once(run_with_bad_val, tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["report", str(run_with_bad_val), "--output", str(out), "--map", "pca"]) == 0
    captured = capsys.readouterr()
    assert "collapse diagnostics skipped" not in captured.out, captured.out
    for name in BAD:
        assert captured.err.count(name) == 1, captured.err
    assert "skipped 2 unreadable files" in captured.err and "Traceback" not in captured.err


def test_diagnostics_count_the_skipped_files(run_with_bad_val, capsys):
    d = run_diagnostics(run_with_bad_val, map_method="pca")
    assert d.skipped_files == 2 and d.samples == 8 and len(d.labels) == 8
    assert sorted(s["reason"] for s in d.skipped) == ["not an image", "truncated"]


def test_strict_data_refuses_before_encoding(run_with_bad_val, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("features extracted before the check")

    monkeypatch.setattr("barlowtwins.report.diagnostics.extract_features", forbidden)
    with pytest.raises(DataError) as e:
        run_diagnostics(run_with_bad_val, map_method="pca", strict_data=True)
    assert len(str(e.value).splitlines()) == 1 and all(b in str(e.value) for b in BAD)


def test_report_strict_data_is_one_line_exit_2_and_a_plain_report_lists_the_files(run_with_bad_val, tmp_path, capsys):
    out = tmp_path / "strict.html"
    assert main(["report", str(run_with_bad_val), "--output", str(out), "--map", "pca", "--strict-data"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and all(b in err for b in BAD) and not out.exists(), err
    assert main(["report", str(run_with_bad_val), "--output", str(tmp_path / "plain.html"), "--map", "pca"]) == 0
    notes = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("note:")]
    assert any("skipped 2 unreadable files" in ln for ln in notes), notes


def test_the_map_is_coloured_by_the_labels_given_or_the_runs_knn_data(tmp_path):
    """A run on unlabelled images: with --labels (or the run's online-kNN data) the diagnostics measure a labelled
    folder, so the 2-D map has classes; an explicit --labels that is not a folder is one line."""
    from barlowtwins.errors import ConfigError

    tree = make_image_folder(tmp_path / "jpegs", classes=("cat", "dog"), per_class=4)
    run = tmp_path / "run"
    pretrain(tiny_config(tree / "train", run, dataset="images", batch_size=4, epochs=1, workers=0))
    plain = run_diagnostics(run, map_method="pca")
    assert plain.labels is None and plain.split == "all images"
    given = run_diagnostics(run, map_method="pca", labels_dir=str(tree))
    assert given.labels is not None and given.class_names == ["cat", "dog"] and str(tree) in given.split
    with pytest.raises(ConfigError, match="--labels"):
        run_diagnostics(run, map_method="pca", labels_dir=str(tmp_path / "missing"))
    knn = tmp_path / "run-knn"
    pretrain(tiny_config(tree / "train", knn, dataset="images", batch_size=4, epochs=1, workers=0,
                         knn_dataset="folder", knn_data_dir=str(tree)))
    from_knn = run_diagnostics(knn, map_method="pca")
    assert from_knn.labels is not None and "online kNN" in from_knn.split
