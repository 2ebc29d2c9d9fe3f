"""`barlowtwins bench` as a command: every bad setting one line (exit 2) before anything is built or written, the
data paths timed by default on a CPU, the JSON and RESULTS.md row it says it wrote, and exit 1 naming each
measurement that failed."""

import json

import pytest

from barlowtwins.cli import bench as command
from barlowtwins.cli import main

MODEL = ["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
         "--image-size", "16", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--iters", "1",
         "--warmup", "0", "--repeats", "1"]


@pytest.mark.parametrize("flags, message", [
    (["--iters", "0"], "--iters must be at least 1, got 0"),
    (["--repeats", "0"], "--repeats must be at least 1, got 0"),
    (["--image-size", "0"], "--image-size must be at least 1, got 0"),
    (["--warmup", "-1"], "--warmup, --make-jpegs and --workers cannot be negative"),
    (["--workers", "-2"], "--warmup, --make-jpegs and --workers cannot be negative"),
    (["--time-limit", "0"], "--time-limit must be a positive number of seconds, got 0.0"),
    (["--jpeg-size", "50", "20"], "--jpeg-size MIN MAX needs 1 <= MIN <= MAX"),
])
def test_a_bad_setting_is_one_line_exit_2_before_any_work(tmp_path, capsys, flags, message):
    argv = ["bench", "--make-jpegs", "4", "--jpeg-dir", str(tmp_path / "j"), "--output", str(tmp_path / "b.json"),
            *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins bench: error: ") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "j").exists() and not (tmp_path / "b.json").exists()


def test_images_must_be_given(tmp_path, capsys):
    assert main(["bench"]) == 2
    assert "give images to read: --jpeg-dir DIR, --make-jpegs N (synthetic), or --dataset NAME" in \
        capsys.readouterr().err
    (tmp_path / "file.jpg").write_bytes(b"")
    assert main(["bench", "--jpeg-dir", str(tmp_path / "file.jpg")]) == 2
    assert f"--jpeg-dir {tmp_path / 'file.jpg'} is not a folder" in capsys.readouterr().err


def test_on_a_cpu_the_cpu_path_is_timed_and_both_files_are_written(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    assert main([*MODEL, "--make-jpegs", "8", "--jpeg-size", "20", "30", "--no-official",
                 "--output", str(tmp_path / "b.json"), "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert f"saved {tmp_path / 'b.json'}" in out and f"added a row to {results}" in out
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["spec"]["data_paths"] == ["cpu"] and set(r["data_only"]) == {"cpu"}  # no device path without CUDA
    assert r["official_pil"] is None and r["spec"]["official"] is False
    assert r["spec"]["image_size"] == 16 and r["spec"]["batch_size"] == 4 and r["model_only"]["samples_per_sec"] > 0
    assert sum(ln.startswith("| 20") for ln in results.read_text().splitlines()) == 1  # one dated row


def test_each_failed_measurement_is_one_line_and_the_exit_status_is_1(tmp_path, capsys, monkeypatch):
    real = command.run_bench

    def failing(spec, **kw):
        result = real(spec, **kw)
        result.errors.update({"end to end cpu": "RuntimeError: worker died", "model only": "out of memory"})
        return result

    monkeypatch.setattr(command, "run_bench", failing)
    assert main([*MODEL, "--make-jpegs", "8", "--jpeg-size", "20", "30", "--no-official"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["barlowtwins bench: error: end to end cpu failed: RuntimeError: worker died",
                   "barlowtwins bench: error: model only failed: out of memory"]
