"""``barlowtwins bench`` at toy sizes: it runs, prints the table, writes the JSON and the RESULTS.md row."""

import json

import pytest
import torch

from barlowtwins.bench import (
    BenchResult,
    append_results,
    peak_tflops,
    results_row,
)
from barlowtwins.cli import main


def test_bench_command_on_a_synthetic_jpeg_folder(tmp_path, capsys):
    results = tmp_path / "RESULTS.md"
    results.write_text("# Benchmark results\n\n## Another table\n\n| a |\n|---|\n| 1 |\n")
    code = main(["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
                 "--image-size", "32", "--batch-size", "4", "--data-path", "cpu", "device", "--workers", "0",
                 "--make-jpegs", "10", "--jpeg-size", "40", "60", "--jpeg-dir", str(tmp_path / "jpegs"),
                 "--iters", "1", "--warmup", "1", "--repeats", "2", "--output", str(tmp_path / "bench.json"),
                 "--results", str(results)])
    assert code == 0
    out = capsys.readouterr().out
    assert "model only" in out and "official PIL pipeline" in out and "ratio cpu / official" in out
    assert len(list((tmp_path / "jpegs").glob("*.jpg"))) == 10
    r = json.loads((tmp_path / "bench.json").read_text())
    assert r["spec"]["backbone"] == "resnet18" and r["spec"]["image_size"] == 32 and r["spec"]["workers"] == 0
    assert r["environment"]["torch"] == torch.__version__ and r["environment"]["date"]
    m = r["model_only"]
    assert m["samples_per_sec"] > 0 and m["gflop_per_sample"] > 0 and m["tflops"] > 0
    assert m["mfu"] is None and m["host_max_rss_gib"] > 0  # no known peak on a CPU: MFU n/a
    assert set(r["data_only"]) == set(r["end_to_end"]) == {"cpu", "device"}
    assert all(v > 0 for v in r["data_only"].values()) and r["official_pil"] > 0
    # Every measurement ran twice, in turn; the reported figure is the median of its runs.
    assert {k: len(v) for k, v in r["runs"].items()} == {
        "model only": 2, "data path cpu": 2, "end to end cpu": 2, "data path device": 2, "end to end device": 2,
        "official PIL pipeline": 2}
    assert r["data_only"]["cpu"] == pytest.approx(sum(r["runs"]["data path cpu"]) / 2)
    text = results.read_text()
    assert "## Another table" in text and "| 1 |" in text
    row = [ln for ln in text.splitlines() if ln.startswith("| 20")]
    assert len(row) == 1 and "| resnet18 width 8, small stem, projector 32-32 | 32 | 4 | 0 |" in row[0]
    assert "| n/a |" in row[0]


def test_bench_reads_the_same_images_from_shards_too(tmp_path, capsys):
    """--shards: the folder's images written as WebDataset shards and timed on the same paths, side by side."""
    code = main(["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
                 "--image-size", "32", "--batch-size", "4", "--data-path", "cpu", "--workers", "0", "--no-official",
                 "--make-jpegs", "10", "--jpeg-size", "40", "60", "--shards", "--iters", "1", "--warmup", "1",
                 "--repeats", "1", "--output", str(tmp_path / "bench.json")])
    assert code == 0
    assert "data path cpu shards (no model)" in capsys.readouterr().out
    r = json.loads((tmp_path / "bench.json").read_text())
    assert set(r["data_only"]) == {"cpu", "cpu shards"} and all(v > 0 for v in r["data_only"].values())
    assert r["spec"]["shards"] is True


def test_bench_on_an_in_memory_data_set(fmnist_dir, tmp_path, capsys):
    code = main(["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
                 "--image-size", "28", "--batch-size", "8", "--dataset", "fashion-mnist", "--data-dir",
                 str(fmnist_dir), "--iters", "1", "--warmup", "1", "--output", str(tmp_path / "b.json")])
    assert code == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert set(r["end_to_end"]) == {"memory"} and r["official_pil"] is None


def test_rows_go_under_their_own_table_and_bad_flags_are_one_line(tmp_path, capsys):
    res = BenchResult(spec={"backbone": "resnet50", "image_size": 224, "batch_size": 256, "workers": 8},
                      environment={"date": "2026-11-30", "device": "NVIDIA H200", "torch": "2", "torchvision": "0"},
                      model_only={"samples_per_sec": 1000.0, "tflops": 150.0, "mfu": 0.152, "gflop_per_sample": 1.0,
                                  "device_max_allocated_gib": 40.0},
                      data_only={"device": 2000.0}, end_to_end={"device": 950.0}, official_pil=300.0)
    assert "| 15.2% |" in results_row(res) and "device 2000.0 / 950.0" in results_row(res)
    path = tmp_path / "R.md"
    append_results(path, res)
    path.write_text(path.read_text() + "\n## Later section\n\ntext\n")
    append_results(path, res)
    lines = path.read_text().splitlines()
    rows = [i for i, ln in enumerate(lines) if ln.startswith("| 2026-11-30")]
    assert rows[1] == rows[0] + 1 and lines.index("## Later section") > rows[1]
    assert peak_tflops(torch.device("cpu"), "bf16") is None
    assert main(["bench", "--batch-size", "0", "--make-jpegs", "2"]) == 2
    assert main(["bench"]) == 2
    assert "give images to read" in capsys.readouterr().err
    assert main(["bench", "--make-jpegs", "3", "--jpeg-size", "20", "30", "--batch-size", "4",
                 "--jpeg-dir", str(tmp_path / "few")]) == 2
    assert "3 images are fewer than one batch of 4" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--data-path", "gpu", "--make-jpegs", "2"])


def test_bench_times_the_network_the_trainer_trains():
    from barlowtwins.bench.run import BenchSpec, _Model
    from barlowtwins.training.config import PretrainConfig
    from barlowtwins.training.run import build_pretrain_model

    spec = BenchSpec(backbone="resnet18", stem="small", width=8, projector="32-32", seed=3)
    bench = _Model(spec, torch.device("cpu"), None).model
    torch.manual_seed(3)
    trained = build_pretrain_model(PretrainConfig(backbone="resnet18", stem="small", width=8, projector="32-32"))
    want = trained.state_dict()
    assert list(bench.state_dict()) == list(want)
    assert all(torch.equal(v, want[k]) for k, v in bench.state_dict().items())  # same layers, same initial weights
    assert bench.loss.terms == trained.loss.terms and bench.loss.lambd == trained.loss.lambd


def test_the_official_pipeline_reads_images_with_the_format_allow_list(tmp_path, monkeypatch):
    """bench's copy of torchvision's ImageFolder loader opens files through read_image: an EPS file named .jpg is
    refused in one line, PIL's EPS plugin (Ghostscript) never used."""
    import subprocess

    from PIL import EpsImagePlugin, Image

    from barlowtwins.bench.official import _OfficialFiles
    from barlowtwins.errors import DataError

    (tmp_path / "eps.jpg").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    used = []
    original = EpsImagePlugin.EpsImageFile._open
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: used.append("EPS") or original(self))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: used.append("Popen") or 1 / 0)
    with pytest.raises(DataError, match="eps.jpg"):
        _OfficialFiles([str(tmp_path / "eps.jpg")], 16)[0]
    assert not used
    Image.new("RGB", (20, 20), (200, 0, 0)).save(tmp_path / "ok.jpg")
    (v1, v2), _ = _OfficialFiles([str(tmp_path / "ok.jpg")], 16)[0]
    assert v1.shape == v2.shape == (3, 16, 16)


@pytest.mark.parametrize("flags,message", [(["--image-size", "5000"], "--image-size must be at most 4096"),
                                           (["--jpeg-size", "20", "100000"], "--jpeg-size MIN MAX needs"),
                                           (["--width", "20000"], "at most 1024")])
def test_bench_sizes_are_bounded_before_anything_is_built(tmp_path, capsys, flags, message):
    assert main(["bench", "--make-jpegs", "2", "--jpeg-dir", str(tmp_path / "j"), "--no-official", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "j").exists()


def _bad_jpeg_folder(root):
    import numpy as np
    from conftest import make_image_folder

    make_image_folder(root, per_class=2, splits=("train",))
    data = next(iter(sorted(root.rglob("*.jpg")))).read_bytes()
    (root / "cut_short.jpg").write_bytes(data[: len(data) // 2])
    (root / "noise.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return root


def test_bench_skips_unreadable_files_and_counts_them(tmp_path, capsys):
    folder = _bad_jpeg_folder(tmp_path / "jpegs")
    argv = ["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
            "--image-size", "16", "--batch-size", "2", "--data-path", "cpu", "--workers", "0", "--jpeg-dir",
            str(folder), "--iters", "6", "--warmup", "1", "--repeats", "1", "--output", str(tmp_path / "b.json")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["skipped_files"] == 2, r["skipped"]
    assert sorted(s["reason"] for s in r["skipped"]) == ["not an image", "truncated"]
    summary = [ln for ln in err.splitlines() if "skipped 2 unreadable files" in ln]
    assert len(summary) == 1 and "cut_short.jpg" in summary[0] and "noise.jpg" in summary[0], err
    assert "Traceback" not in err


def test_bench_strict_data_refuses_before_any_measurement(tmp_path, capsys, monkeypatch):
    folder = _bad_jpeg_folder(tmp_path / "jpegs")

    def forbidden(*a, **k):
        raise AssertionError("a measurement started before the files were checked")

    monkeypatch.setattr("barlowtwins.bench.run.measure_batches", forbidden)
    monkeypatch.setattr("barlowtwins.bench.run._Model", forbidden)
    code = main(["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
                 "--image-size", "16", "--batch-size", "2", "--data-path", "cpu", "--workers", "0", "--jpeg-dir",
                 str(folder), "--strict-data"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cut_short.jpg" in err and "noise.jpg" in err, err


TOY = ["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32", "--image-size",
       "16", "--batch-size", "4", "--workers", "0", "--make-jpegs", "8", "--jpeg-size", "30", "40", "--iters", "1",
       "--warmup", "1", "--repeats", "1"]


def test_a_failing_measurement_costs_only_its_own_figure(tmp_path, capsys, monkeypatch):
    """The official pipeline breaks: every other figure is saved, the row says which failed, the status is 1."""
    def broken(*a, **k):
        raise RuntimeError("loader exploded\nsecond line")

    monkeypatch.setattr("barlowtwins.bench.run.official_loader", broken)
    md = tmp_path / "R.md"
    code = main([*TOY, "--data-path", "cpu", "device", "--output", str(tmp_path / "b.json"), "--results", str(md)])
    err = capsys.readouterr().err
    assert code == 1
    failed = [ln for ln in err.splitlines() if "failed:" in ln]
    assert failed == ["barlowtwins bench: error: official PIL pipeline failed: RuntimeError: second line"], err
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["errors"] == {"official PIL pipeline": "RuntimeError: second line"} and r["pending"] == []
    assert r["official_pil"] is None and r["model_only"]["samples_per_sec"] > 0
    assert set(r["data_only"]) == set(r["end_to_end"]) == {"cpu", "device"}
    assert "data path cpu / official PIL" not in r["ratios"] and "end to end cpu / model only" in r["ratios"]
    rows = [ln for ln in md.read_text().splitlines() if ln.startswith("| 20")]
    assert len(rows) == 1 and "| failed |" in rows[0]


def test_the_figures_are_saved_after_every_measurement(tmp_path, capsys):
    """on_update sees the result after the set-up and after each measurement, each figure there from then on."""
    from barlowtwins.bench import BenchSpec, make_jpeg_folder, run_bench

    folder = make_jpeg_folder(tmp_path / "j", 8, (30, 40))
    spec = BenchSpec(backbone="resnet18", stem="small", width=8, projector="32-32", image_size=16, batch_size=4,
                     data_paths=("cpu",), workers=0, iters=1, warmup=0, repeats=2)
    seen = []
    result = run_bench(spec, folder, log=lambda line: None,
                       on_update=lambda r: seen.append(json.loads(json.dumps(r.to_dict()))))
    names = ["model only", "data path cpu", "end to end cpu", "official PIL pipeline"]
    assert len(seen) == 1 + 2 * len(names)  # the set-up, then every measurement of both runs
    assert seen[0]["pending"] == names and seen[0]["runs"] == {} and seen[0]["model_only"]["samples_per_sec"] is None
    assert [len(s["runs"]) for s in seen[1:5]] == [1, 2, 3, 4]  # one more figure after each measurement
    assert seen[1]["model_only"]["samples_per_sec"] > 0 and seen[1]["data_only"] == {}
    assert seen[5]["pending"] == names[1:] and seen[-1]["pending"] == []
    assert seen[-1] == json.loads(json.dumps(result.to_dict()))
    assert all(len(v) == 2 for v in result.runs.values()) and result.errors == {}


def test_a_device_path_that_falls_back_is_a_row_of_its_own(tmp_path, capsys, monkeypatch):
    """Asked for cpu and device, the device decoder unusable: the fallback does not overwrite the cpu row."""
    monkeypatch.setattr("barlowtwins.data.pipeline.check_device_decoder", lambda device: "no decoder here")
    code = main([*TOY, "--data-path", "cpu", "device", "--no-official", "--output", str(tmp_path / "b.json")])
    assert code == 0
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["paths"] == ["cpu", "device (fell back to cpu)"]
    assert set(r["data_only"]) == set(r["end_to_end"]) == set(r["paths"])
    assert set(r["runs"]) == {"model only", "data path cpu", "end to end cpu", "data path device (fell back to cpu)",
                              "end to end device (fell back to cpu)"}
    assert "data path device (fell back to cpu) / data path cpu" in r["ratios"]
    assert "data path device (fell back to cpu) (no model)" in capsys.readouterr().out


def test_a_model_that_cannot_be_built_leaves_the_data_path_figures(tmp_path, capsys, monkeypatch):
    def no_model(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("barlowtwins.bench.run._Model", no_model)
    code = main([*TOY, "--data-path", "cpu", "--output", str(tmp_path / "b.json")])
    assert code == 1
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["errors"]["model"].startswith("OutOfMemoryError: CUDA out of memory")
    assert set(r["errors"]) == {"model", "model only", "end to end cpu"}
    assert r["data_only"]["cpu"] > 0 and r["official_pil"] > 0 and r["end_to_end"] == {}
    assert r["model_only"]["samples_per_sec"] is None and r["model_only"]["mfu"] is None
    assert "model only (synthetic device tensors)      failed" in capsys.readouterr().out


def test_a_measurement_past_its_time_limit_is_stopped_and_the_rest_run(tmp_path, capsys, monkeypatch):
    """A loader that hangs: the hard limit (1.5 x --time-limit) stops it; the other figures are measured (a limit
    the toy's real measurements stay well inside on a loaded 2-core machine)."""
    import time

    class Hang:
        def __iter__(self):
            while True:
                time.sleep(0.05)

    monkeypatch.setattr("barlowtwins.bench.run.official_loader", lambda *a, **k: Hang())
    code = main([*TOY, "--data-path", "cpu", "--time-limit", "4", "--output", str(tmp_path / "b.json")])
    assert code == 1
    r = json.loads((tmp_path / "b.json").read_text())
    assert r["errors"] == {"official PIL pipeline": "MeasurementTimeout: 'official PIL pipeline' ran past its "
                                                    "time limit of 6 s"}
    assert r["model_only"]["samples_per_sec"] > 0 and r["data_only"]["cpu"] > 0 and r["end_to_end"]["cpu"] > 0
    assert main([*TOY, "--time-limit", "0"]) == 2
    assert "--time-limit must be a positive number" in capsys.readouterr().err


def test_timing_stops_at_the_deadline_after_the_batch_in_hand():
    import time

    from barlowtwins.bench import measure_batches, time_batches

    calls = []
    cpu = torch.device("cpu")
    t = measure_batches(iter(int, 1), calls.append, 4, iters=10, warmup=2, device=cpu, deadline=time.perf_counter())
    assert t.batches == 1 and len(calls) == 3 and t.rate > 0  # the warm-up, then one timed batch
    t = measure_batches(iter(int, 1), lambda b: time.sleep(0.01), 4, iters=3, warmup=0, device=cpu)
    assert t.batches == 3 and 0 < t.rate <= 3 * 4 / 0.03  # 12 samples in at least 30 ms
    assert time_batches(iter(int, 1), lambda b: None, 4, 2, 0, cpu) > 0


def test_time_limit_interrupts_a_loop_and_restores_the_handler():
    import signal
    import time

    from barlowtwins.bench import MeasurementTimeout, time_limit

    before = signal.getsignal(signal.SIGALRM)
    start = time.perf_counter()
    with pytest.raises(MeasurementTimeout, match="the loop ran past its time limit of 0.2 s"):
        with time_limit(0.2, "the loop"):
            while True:
                time.sleep(0.01)
    assert time.perf_counter() - start < 5
    assert signal.getsignal(signal.SIGALRM) is before and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with time_limit(None):  # no limit: nothing armed
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    with time_limit(5):
        pass
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_ratios_are_quotients_of_the_medians_and_rows_are_rewritten_in_place(tmp_path):
    from fractions import Fraction

    from barlowtwins.bench import ratios

    res = BenchResult(spec={"backbone": "resnet50", "image_size": 224, "batch_size": 256, "workers": 8},
                      environment={"date": "2026-11-30", "device": "NVIDIA H100", "torch": "2", "torchvision": "0"},
                      model_only={"samples_per_sec": 1000.0, "tflops": None, "mfu": None, "gflop_per_sample": None,
                                  "device_max_allocated_gib": 40.0},
                      data_only={"cpu": 700.0, "device": 2100.0}, end_to_end={"cpu": 650.0}, official_pil=300.0,
                      paths=["cpu", "device"], pending=["end to end device"])
    want = {"end to end cpu / model only": Fraction(650, 1000), "data path cpu / official PIL": Fraction(700, 300),
            "data path device / official PIL": Fraction(2100, 300), "data path device / data path cpu": Fraction(3)}
    got = ratios(res)
    assert set(got) == set(want) and all(got[k] == pytest.approx(float(v), rel=1e-15) for k, v in want.items())
    row = results_row(res)
    assert "cpu 700.0 / 650.0; device 2100.0 / not run" in row and "| n/a | n/a |" in row
    path = tmp_path / "R.md"
    first = append_results(path, res)
    res.end_to_end["device"] = 1900.0
    res.pending = []
    second = append_results(path, res, replace=first)
    rows = [ln for ln in path.read_text().splitlines() if ln.startswith("| 2026")]
    assert rows == [second] and "device 2100.0 / 1900.0" in second
    append_results(path, res)  # without replace: a new row, as before
    assert len([ln for ln in path.read_text().splitlines() if ln.startswith("| 2026")]) == 2
