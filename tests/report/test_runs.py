"""A run folder read for the report (`load_run`): step and event records, a step logged twice by a resume kept
once, C snapshots, evaluation results; damaged files skipped with a note, never a traceback."""

import json

import numpy as np
import pytest

from barlowtwins.errors import DataError
from barlowtwins.report.runs import load_run


def write(folder, records, config="backbone: resnet18\nimage_size: 16\n"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if config is not None:
        (folder / "config.yaml").write_text(config)
    return folder


def test_steps_events_and_config_are_read(tmp_path):
    run = load_run(write(tmp_path / "run", [
        {"event": "start", "step": 0, "steps_per_epoch": 4, "total_steps": 8},
        {"step": 2, "epoch": 0.5, "loss": 10.0}, {"step": 4, "epoch": 1.0, "loss": 8.0},
        {"event": "knn", "epoch": 1, "knn_k=20_top1": 40.0}, {"event": "done", "step": 8}]))
    assert run.name == "run" and run.config == {"backbone": "resnet18", "image_size": 16}
    assert [s["step"] for s in run.steps] == [2, 4] and [e["event"] for e in run.events] == ["start", "knn", "done"]
    assert run.steps_per_epoch == 4 and run.epoch_of(6) == 1.5
    assert run.series("loss") == ([0.5, 1.0], [10.0, 8.0]) and run.series("lr_weights") == ([], [])
    assert run.knn == [{"event": "knn", "epoch": 1, "knn_k=20_top1": 40.0}]
    assert (run.skipped_lines, run.notes, run.snapshots, run.results) == (0, [], [], [])


def test_a_step_logged_again_after_a_resume_is_kept_once_the_last_time(tmp_path):
    run = load_run(write(tmp_path / "run", [
        {"step": 1, "loss": 9.0}, {"step": 2, "loss": 8.0}, {"step": 3, "loss": 7.0},
        {"event": "resume", "step": 2, "steps_per_epoch": 3},
        {"step": 3, "loss": 6.5}, {"step": 4, "loss": 6.0}]))
    assert [(s["step"], s["loss"]) for s in run.steps] == [(1, 9.0), (2, 8.0), (3, 6.5), (4, 6.0)]
    assert run.steps_per_epoch == 3


def test_a_run_without_its_length_has_no_epochs(tmp_path):
    run = load_run(write(tmp_path / "run", [{"step": 5, "loss": 1.0}], config=None))
    assert run.steps_per_epoch is None and run.epoch_of(5) is None and run.config == {}
    assert run.series("loss") == ([5], [1.0])  # plotted by step then


def test_torn_and_binary_lines_are_skipped_and_counted(tmp_path):
    folder = write(tmp_path / "run", [{"step": 1, "loss": 2.0}])
    with open(folder / "metrics.jsonl", "ab") as f:
        f.write(b'[1, 2]\n"text"\n{"step": 2, "lo\n\xff\xfe\x00binary\n\n{"step": 3, "loss": 1.0}\n')
    run = load_run(folder)
    assert [s["step"] for s in run.steps] == [1, 3] and run.skipped_lines == 4  # the blank line is not counted
    assert run.notes == ["4 unreadable line(s) of metrics.jsonl skipped (cut short, or not text)"]


@pytest.mark.parametrize("config, why", [(b"backbone: [resnet18\n", "could not be read (ParserError)"),
                                         (b"\xff\xfe binary", "could not be read (UnicodeDecodeError)"),
                                         (b"- a list\n", "is not a mapping of settings")])
def test_an_unreadable_config_is_a_note_and_no_settings(tmp_path, config, why):
    folder = write(tmp_path / "run", [{"step": 1, "loss": 2.0}], config=None)
    (folder / "config.yaml").write_bytes(config)
    run = load_run(folder)
    assert run.config == {} and len(run.notes) == 1 and why in run.notes[0] and "config.yaml" in run.notes[0]


def test_snapshots_and_results_are_read_and_a_damaged_result_noted(tmp_path):
    folder = write(tmp_path / "run", [{"step": 1, "loss": 2.0}])
    c = np.eye(3).tolist()
    (folder / "correlation.jsonl").write_text(json.dumps({"step": 4, "dims": 3, "c": c}) + "\n"
                                              + json.dumps({"step": 1, "dims": 3, "c": c}) + "\n" + '{"step": 9')
    (folder / "eval").mkdir()
    record = {"protocol": "knn", "dataset": "folder", "metrics": {"k=20": {"top1": 50.0}}}
    (folder / "eval" / "knn-folder.json").write_text(json.dumps(record))
    (folder / "eval" / "linear-fast-folder.json").write_text('{"protocol": "linear-fast", "metr')
    run = load_run(folder)
    assert [s["step"] for s in run.snapshots] == [1, 4] and run.snapshots[0]["c"].shape == (3, 3)
    assert run.results == [(folder / "eval" / "knn-folder.json", record)]
    assert len(run.notes) == 1 and "linear-fast-folder.json skipped" in run.notes[0]


def test_what_is_not_a_run_folder_is_one_line(tmp_path):
    with pytest.raises(DataError, match="run folder .*nope does not exist; give the --out folder"):
        load_run(tmp_path / "nope")
    with pytest.raises(DataError, match="has no metrics.jsonl; give the --out folder of a pretraining run"):
        load_run(tmp_path)
