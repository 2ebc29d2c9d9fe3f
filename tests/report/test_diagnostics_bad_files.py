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
