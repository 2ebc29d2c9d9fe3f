"""`build_report`: the page and its figures from run folders, captions true to the data and to how often the run
logged, notes for what cannot be shown, two runs of the same name told apart, and the assets folder it owns."""

import json
import re
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from report_fakes import diagnostics, write_run  # noqa: E402

import barlowtwins.report.build as report_module  # noqa: E402
from barlowtwins.report import ASSETS_MARKER, asset_folder, build_report, describe_images  # noqa: E402


def test_caption_of_a_run_with_few_logged_points_says_so(tmp_path):
    run_dir = write_run(tmp_path / "short", steps=[20, 40, 60])
    page = build_report([run_dir], tmp_path / "r.html", diagnostics=False).html.read_text()
    assert "Only 3 logged point(s) per curve" in page
    many = write_run(tmp_path / "long", steps=list(range(10, 101, 10)))
    assert "logged point(s)" not in build_report([many], tmp_path / "r2.html", diagnostics=False).html.read_text()


@pytest.mark.parametrize("split, held_out", [("all images", False), ("train", False), ("test", True)])
def test_captions_say_held_out_only_for_held_out_data(tmp_path, monkeypatch, split, held_out):
    monkeypatch.setattr(report_module, "run_diagnostics", lambda *a, **k: diagnostics(samples=403, split=split))
    run_dir = write_run(tmp_path / "run", steps=list(range(10, 101, 10)))
    page = build_report([run_dir], tmp_path / "r.html").html.read_text()
    captions = " ".join(re.findall(r"<figcaption>(.*?)</figcaption>", page, flags=re.DOTALL))
    assert ("held-out" in captions) == held_out
    assert "403" in captions
    assert "images images" not in captions


def test_the_figures_are_files_beside_the_page_and_embedded_in_it(tmp_path):
    run_dir = write_run(tmp_path / "run", steps=list(range(10, 101, 10)))
    res = build_report([run_dir], tmp_path / "out" / "page.html", diagnostics=False)
    assert res.html == tmp_path / "out" / "page.html" and asset_folder(res.html) == tmp_path / "out" / "page_files"
    assert set(res.figures) == {"loss", "lr"}  # what the metrics hold: no throughput, data wait, kNN, C snapshots
    page = res.html.read_text()
    for fig_id, path in res.figures.items():
        assert path.parent == tmp_path / "out" / "page_files" and path.read_bytes().startswith(b"\x89PNG")
        assert f'<figure id="{fig_id}">' in page
    marker = json.loads((tmp_path / "out" / "page_files" / ASSETS_MARKER).read_text())
    assert marker["figures"] == ["loss.png", "lr.png"]  # the folder is the report's: it lists what it wrote


def test_what_cannot_be_shown_is_said_in_notes(tmp_path):
    run_dir = write_run(tmp_path / "run", steps=[10, 20, 30, 40, 50])
    res = build_report([run_dir], tmp_path / "r.html")  # no weights in the folder: no diagnostics
    notes = " | ".join(res.notes)
    assert "collapse diagnostics skipped" in notes and "has no checkpoint.pth or backbone.pth" in notes
    assert "no online kNN logged" in notes and "no C snapshots" in notes
    assert res.diagnostics == [None]
    page = res.html.read_text()
    assert "collapse diagnostics need the run&#x27;s checkpoint and data" in page
    assert "no evaluation results in these folders" in page


def test_two_runs_of_the_same_name_are_told_apart(tmp_path):
    a = write_run(tmp_path / "a" / "run", steps=list(range(10, 101, 10)))
    b = write_run(tmp_path / "b" / "run", steps=list(range(10, 101, 10)))
    page = build_report([a, b], tmp_path / "r.html", diagnostics=False).html.read_text()
    assert "<td>run (1)</td>" in page and "<td>run (2)</td>" in page
    assert "Barlow Twins run report: run (1), run (2)" in page


def test_a_long_run_name_gives_a_short_figure_name(tmp_path, monkeypatch):
    monkeypatch.setattr(report_module, "run_diagnostics", lambda *a, **k: diagnostics(samples=40, split="test"))
    run_dir = write_run(tmp_path / ("x" * 100), steps=list(range(10, 101, 10)))
    res = build_report([run_dir], tmp_path / "r.html")
    names = [p.name for p in res.figures.values()]
    maps = [n for n in names if n.startswith("map-")]
    assert len(maps) == 1 and len(maps[0]) < 100 and re.fullmatch(r"map-x{80}-[0-9a-f]{8}\.png", maps[0])


@pytest.mark.parametrize("split, words", [("val", "12 val images (held-out)"),
                                          ("val of /data/pets", "12 val of /data/pets images (held-out)"),
                                          ("train", "12 train images, training data"),
                                          ("all images", "all 12 images, training data")])
def test_the_images_are_described_as_what_they_were(split, words):
    assert describe_images([diagnostics(samples=12, split=split)]) == words
    assert describe_images([None]) == "the run's images"
    assert describe_images([diagnostics(12, "val"), diagnostics(12, "val")]) == "12 val images (held-out)"


def test_nothing_is_written_for_a_folder_that_is_not_a_run(tmp_path):
    from barlowtwins.errors import DataError

    with pytest.raises(DataError, match="has no metrics.jsonl"):
        build_report([tmp_path], tmp_path / "out" / "r.html")
    assert not Path(tmp_path / "out").exists()
