"""`barlowtwins report`: the page written next to one run (or report.html for several), what it could not show
printed as notes, and one-line errors (exit 2) before any work."""

import json

import pytest

pytest.importorskip("matplotlib")

from barlowtwins.cli import main  # noqa: E402


def make_run(folder, steps=8):
    """A run folder as far as the report reads it without diagnostics: metrics.jsonl and config.yaml."""
    folder.mkdir(parents=True)
    records = [{"event": "start", "step": 0, "steps_per_epoch": 4, "total_steps": steps}]
    records += [{"step": s, "epoch": s / 4, "loss": 100.0 / s, "on_diag": 10.0 / s, "off_diag": 5.0 / s,
                 "lr_weights": 0.1, "images_per_sec": 50.0, "data_wait_share": 0.1} for s in range(1, steps + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "config.yaml").write_text("backbone: resnet18\nimage_size: 16\n")
    return folder


def test_not_a_run_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_one_run_gets_its_page_in_its_folder_and_the_notes_are_printed(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--no-diagnostics"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"wrote {run / 'report.html'} (4 figures, also in {run / 'report_files'}/)"
    notes = [ln for ln in lines if ln.startswith("note: ")]
    assert any("no online kNN logged" in n for n in notes) and any("no C snapshots" in n for n in notes)
    assert sorted(p.name for p in (run / "report_files").glob("*.png")) == ["data_wait.png", "loss.png", "lr.png",
                                                                            "throughput.png"]


def test_several_runs_go_to_report_html_here_or_to_the_output_given(tmp_path, capsys, monkeypatch):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", steps=4)
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(a), str(b), "--no-diagnostics"]) == 0
    assert (tmp_path / "report.html").is_file() and "<td>a</td>" in (tmp_path / "report.html").read_text()
    assert main(["report", str(a), str(b), "--no-diagnostics", "--output", str(tmp_path / "pages" / "ab.html")]) == 0
    assert (tmp_path / "pages" / "ab.html").is_file() and (tmp_path / "pages" / "ab_files" / "loss.png").is_file()
    assert "wrote" in capsys.readouterr().out


def test_too_few_samples_for_the_diagnostics_is_one_line_before_any_work(tmp_path, capsys):
    run = make_run(tmp_path / "run")
    assert main(["report", str(run), "--samples", "1"]) == 2
    assert capsys.readouterr().err.strip() == "barlowtwins report: error: --samples must be at least 2, got 1"
    assert not (run / "report.html").exists() and not (run / "report_files").exists()
