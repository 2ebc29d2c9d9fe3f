"""`barlowtwins detect`: every bad setting, a result file that cannot be written and data that is not in the
VOC or COCO layout are one line (exit 2) before any model is built."""

import pytest

from barlowtwins.cli import detect as command
from barlowtwins.cli import main


@pytest.fixture
def nothing_built(monkeypatch):
    """Fail the test if the command gets as far as building the detector or reading a backbone."""
    def fail(*a, **k):
        raise AssertionError("built a model before refusing the input")

    monkeypatch.setattr(command, "build_detector", fail)
    monkeypatch.setattr(command, "setup_backbone", fail)


@pytest.mark.parametrize("flags, message", [
    (["--iterations", "0"], "--iterations must be at least 1, got 0"),
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--lr", "-0.02"], "--lr must be positive, got -0.02"),
    (["--min-size", "600", "8"], "--min-size and --max-size must be at least 16 pixels"),
    (["--max-size", "10"], "--min-size and --max-size must be at least 16 pixels"),
    (["--rois-per-image", "0"], "--rois-per-image must be at least 1, got 0"),
    (["--log-every", "0"], "--log-every must be at least 1, got 0"),
    (["--task", "instance-segmentation"], "--task instance-segmentation needs masks: use --dataset coco"),
])
def test_a_bad_setting_is_one_line_exit_2(nothing_built, tmp_path, capsys, flags, message):
    assert main(["detect", "--dataset", "voc", "--data-dir", str(tmp_path), "--random-init", "--backbone",
                 "resnet18", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"barlowtwins detect: error: {message}") and len(err.splitlines()) == 1, err


def test_voc_needs_its_data_folder(nothing_built, capsys):
    assert main(["detect", "--dataset", "voc", "--random-init", "--backbone", "resnet18"]) == 2
    assert capsys.readouterr().err.strip() == \
        "barlowtwins detect: error: --dataset voc needs --data-dir (the folder holding VOCdevkit/)"


def test_an_unwritable_result_file_is_refused_before_the_data_is_read(nothing_built, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(command, "load_data", lambda args: pytest.fail("read the data first"))
    assert main(["detect", "--dataset", "voc", "--data-dir", str(tmp_path / "missing"), "--random-init",
                 "--backbone", "resnet18", "--output", str(tmp_path / "file" / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("dataset, extra, message", [
    ("voc", ["--data-dir", "{tmp}/missing"], "VOC data folder"),
    ("voc", ["--data-dir", "{tmp}"], "{tmp}"),
    ("coco", [], "give --data-dir (a COCO folder) or all of --train-ann"),
    ("coco", ["--data-dir", "{tmp}"], "{tmp}"),
])
def test_data_not_in_the_layout_is_one_line_before_any_model(nothing_built, tmp_path, capsys, dataset, extra,
                                                            message):
    argv = ["detect", "--dataset", dataset, "--random-init", "--backbone", "resnet18",
            *[a.format(tmp=tmp_path) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins detect: error: ") and message.format(tmp=tmp_path) in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err

