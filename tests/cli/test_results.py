"""`barlowtwins results`: one Markdown table of every result file under the folders given; damaged files warned
about on stderr (the table on stdout stays clean); nothing found is one line, exit 2."""

import json

from barlowtwins.cli import main
from barlowtwins.evaluate.results import write_result


def _results(root):
    write_result({"protocol": "knn", "dataset": "folder", "split": "val", "checkpoint": "runs/a",
                  "metrics": {"k=20": {"top1": 81.25, "top5": 100.0}, "k=200": {"top1": 75.5, "top5": 100.0}}},
                 root / "a" / "eval" / "knn-folder.json")
    write_result({"protocol": "linear-fast", "dataset": "folder", "split": "val", "checkpoint": "runs/b",
                  "metrics": {"top1": 90.0, "top5": 100.0}}, root / "b" / "linear-fast-folder.json")
    (root / "a" / "eval" / "notes.json").write_text(json.dumps({"not": "a result"}))  # other JSON: passed over


def test_every_result_under_the_folders_is_a_row(tmp_path, capsys):
    _results(tmp_path)
    assert main(["results", str(tmp_path / "a"), str(tmp_path / "b" / "linear-fast-folder.json")]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].startswith("| checkpoint | protocol | dataset | split | setting |") and lines[1].startswith("|---|")
    rows = lines[2:]
    assert len(rows) == 3 and sum("| knn |" in r for r in rows) == 2 and sum("| linear-fast |" in r for r in rows) == 1
    assert any("| k=20 |" in r and "81.25" in r for r in rows) and any("| k=200 |" in r and "75.5" in r for r in rows)
    assert captured.err == ""


def test_a_damaged_result_file_is_one_warning_line_and_the_rest_is_tabled(tmp_path, capsys):
    _results(tmp_path)
    (tmp_path / "b" / "cut.json").write_text('{"protocol": "knn", "metr')
    assert main(["results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: skipped ") and "cut.json" in warnings[0]
    assert "cut.json" not in captured.out and len(captured.out.strip().splitlines()) == 5


def test_no_result_files_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["results", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"barlowtwins results: error: no result files found under {tmp_path / 'empty'}; run an " \
                  "evaluation command first"
