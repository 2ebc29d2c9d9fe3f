"""`barlowtwins report` writes only what it names: its page, and figures in a `<page>_files/` folder that it made
(marked) itself; foreign and symlinked folders are never written into or cleaned; damaged run files are skipped
and counted, not a traceback."""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("matplotlib")

from barlowtwins.cli import main
from barlowtwins.report import ASSETS_MARKER, build_report
from barlowtwins.report.runs import load_run


def make_run(folder, knn: bool = False):
    """A run folder as the trainer leaves it, as far as the report reads it: metrics.jsonl and config.yaml."""
    folder.mkdir(parents=True)
    records = [{"event": "start", "steps_per_epoch": 2, "total_steps": 4}]
    records += [{"step": s, "epoch": s / 2, "loss": 100.0 / s, "on_diag": 10.0 / s, "off_diag": 5.0 / s,
                 "lr_weights": 0.1 * s, "images_per_sec": 50.0} for s in range(1, 5)]
    if knn:
        records.append({"event": "knn", "epoch": 2, "knn_k=20_top1": 40.0})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "config.yaml").write_text("backbone: resnet18\nimage_size: 16\n")
    return folder


def _one_line_exit_2(argv, capsys, *words):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_a_foreign_asset_folder_is_neither_written_nor_cleaned(tmp_path, capsys):
    """A saved web page: page.html and page_files/ with its own images. The report refuses in one line and every
    file of that folder is as it was."""
    run = make_run(tmp_path / "run")
    saved = tmp_path / "page_files"
    saved.mkdir()
    (saved / "logo.png").write_bytes(b"their logo")
    (saved / "loss.png").write_bytes(b"their loss chart")  # a name the report would use
    _one_line_exit_2(["report", str(run), "--output", str(tmp_path / "page.html"), "--no-diagnostics"], capsys,
                     "page_files", "--output")
    assert sorted(os.listdir(saved)) == ["logo.png", "loss.png"]
    assert (saved / "logo.png").read_bytes() == b"their logo"
    assert (saved / "loss.png").read_bytes() == b"their loss chart"


def test_a_symlinked_asset_folder_is_refused_and_its_target_untouched(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    build_report([run], elsewhere / "r.html", diagnostics=False)  # a folder of ours, marker and all
    (elsewhere / "r_files" / "photo.png").write_bytes(b"a photo")
    before = {p.name: p.read_bytes() for p in (elsewhere / "r_files").iterdir()}
    (tmp_path / "page_files").symlink_to(elsewhere / "r_files", target_is_directory=True)
    _one_line_exit_2(["report", str(run), "--output", str(tmp_path / "page.html"), "--no-diagnostics"], capsys,
                     "symbolic link")
    assert {p.name: p.read_bytes() for p in (elsewhere / "r_files").iterdir()} == before


def test_our_folder_is_reused_and_only_our_own_stale_figures_removed(tmp_path, capsys):
    with_knn, without = make_run(tmp_path / "a", knn=True), make_run(tmp_path / "b")
    page = tmp_path / "page.html"
    assert main(["report", str(with_knn), "--output", str(page), "--no-diagnostics"]) == 0
    files = tmp_path / "page_files"
    assert (files / ASSETS_MARKER).is_file() and (files / "knn.png").is_file()
    (files / "notes.png").write_bytes(b"a user's own file")
    res = build_report([without], page, diagnostics=False)
    assert not (files / "knn.png").exists()  # our figure of the earlier report, no longer drawn
    assert (files / "notes.png").read_bytes() == b"a user's own file"
    assert set(res.figures) <= {p.stem for p in files.glob("*.png")}
    # An empty folder is taken over (and marked).
    empty = tmp_path / "fresh_files"
    empty.mkdir()
    build_report([without], tmp_path / "fresh.html", diagnostics=False)
    assert (empty / ASSETS_MARKER).is_file() and (empty / "loss.png").is_file()


def test_a_binary_tail_in_metrics_jsonl_is_skipped_and_counted(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b"\x00\xff\xfe\x80garbage\n" + bytes(range(128, 256)) + b"\n{\"step\": 9, \"loss\": ")
    assert len(load_run(run).steps) == 4 and load_run(run).skipped_lines == 3
    page = tmp_path / "page.html"
    assert main(["report", str(run), "--output", str(page), "--no-diagnostics"]) == 0
    out = capsys.readouterr().out
    assert "3 unreadable line(s) of metrics.jsonl skipped" in out
    assert "3 unreadable line(s) of metrics.jsonl skipped" in page.read_text()


def test_a_binary_tail_in_the_run_config_is_one_note_not_a_traceback(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    (run / "config.yaml").write_bytes(b"backbone: resnet18\n\xff\xfe\x00\x80")
    assert main(["report", str(run), "--output", str(tmp_path / "p.html"), "--no-diagnostics"]) == 0
    assert "config.yaml" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["under_a_file", "long_name", "a_folder"])
def test_an_unwritable_output_is_one_line_before_any_work(where, tmp_path, capsys, monkeypatch):
    run = make_run(tmp_path / "run")
    (tmp_path / "plain").write_text("x")
    (tmp_path / "dir.html").mkdir()
    output = {"under_a_file": tmp_path / "plain" / "page.html", "long_name": tmp_path / ("p" * 256 + ".html"),
              "a_folder": tmp_path / "dir.html"}[where]

    def no_work(*a, **k):
        raise AssertionError("the report started work before checking its output")

    monkeypatch.setattr("barlowtwins.report.build.load_run", no_work)
    _one_line_exit_2(["report", str(run), "--output", str(output), "--no-diagnostics"], capsys, "--output")
