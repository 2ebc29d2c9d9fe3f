"""``barlowtwins bench`` at toy sizes: it runs, prints the table, writes the JSON and the RESULTS.md row."""

import json

import pytest
import torch

from barlowtwins.cli import main
from barlowtwins.training.bench import BenchResult, append_results, peak_tflops, results_row


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
    from barlowtwins.training.bench import BenchSpec, _Model
    from barlowtwins.training.config import PretrainConfig
    from barlowtwins.training.trainer import build_pretrain_model

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

    from barlowtwins.errors import DataError
    from barlowtwins.training.bench import _OfficialFiles

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

    monkeypatch.setattr("barlowtwins.training.bench.time_batches", forbidden)
    code = main(["bench", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
                 "--image-size", "16", "--batch-size", "2", "--data-path", "cpu", "--workers", "0", "--jpeg-dir",
                 str(folder), "--strict-data"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "cut_short.jpg" in err and "noise.jpg" in err, err
