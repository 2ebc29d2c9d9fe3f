"""One bad-file policy: every command that reads image files skips an unreadable one, counts it in its result and
names it once on stderr; ``--strict-data`` refuses before any work, in one line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from barlowtwins.cli import main
from barlowtwins.models.backbones import create_backbone
from barlowtwins.weights.save import write_run_backbone

ARCH = ["--random-init", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--image-size", "16",
        "--workers", "0", "--device", "cpu"]
BAD = ("cut_short.jpg", "noise.jpg")


def add_bad_files(folder):
    """A truncated JPEG and a .jpg of random bytes in ``folder``."""
    good = next(p for p in sorted(folder.rglob("*.jpg")))
    data = good.read_bytes()
    (folder / BAD[0]).write_bytes(data[: len(data) // 2])
    (folder / BAD[1]).write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())


@pytest.fixture
def bad_tree(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=4)
    add_bad_files(root / "train" / "cat")
    return root


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    cfg = {"backbone": "resnet18", "stem": "small", "width": 8, "image_size": 16}
    write_run_backbone(create_backbone("resnet18", stem="small", width=8), tmp_path / "run", cfg)
    (tmp_path / "run" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    return tmp_path / "run"


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts reading images for features or training."""
    def forbidden(*a, **k):
        raise AssertionError("work started before --strict-data checked the files")

    for target in ("barlowtwins.evaluate.features.extract_features_kept", "barlowtwins.cli.embed.extract_features_kept",
                   "barlowtwins.evaluate.protocols.train_classifier"):
        monkeypatch.setattr(target, forbidden)


def skipped_once(err: str) -> None:
    assert "Traceback" not in err and "barlowtwins.errors" not in err, err
    for name in BAD:
        assert err.count(name) == 1, err
    assert "skipped 2 unreadable files" in err, err


def check_record(record: dict) -> None:
    assert record["skipped_files"] == 2, record
    assert sorted(s["file"].rsplit("/", 1)[-1] for s in record["skipped"]) == sorted(BAD)
    reasons = {s["file"].rsplit("/", 1)[-1]: s["reason"] for s in record["skipped"]}
    assert reasons == {"cut_short.jpg": "truncated", "noise.jpg": "not an image"}, reasons


def command(name, root, tmp_path, run=None):
    out = str(tmp_path / f"{name}.json")
    data = ["--dataset", "folder", "--data-dir", str(root)]
    return {
        "knn": ["knn", *data, "--k", "3", "--output", out, "--no-cache", *ARCH],
        "knn-compare": ["knn", *data, "--k", "3", "--output", out, "--no-cache", "--compare-random",
                        "--checkpoint", str(run), *ARCH[1:]],
        "linear": ["linear", *data, "--epochs", "2", "--output", out, "--no-cache", *ARCH],
        "linear-paper": ["linear", *data, "--protocol", "paper", "--epochs", "1", "--batch-size", "4",
                         "--output", out, *ARCH],
        "finetune": ["finetune", *data, "--train-percent", "100", "--epochs", "1", "--batch-size", "4",
                     "--output", out, *ARCH],
        "transfer": ["transfer", "--dataset", "folder", "--data-dir", str(root), "--epochs", "2", "--output", out,
                     "--no-cache", *ARCH],
        "embed": ["embed", "--checkpoint", str(run), "--dataset", "images", "--data-dir", str(root / "train"),
                  "--output", str(tmp_path / "emb.npy"), "--index-format", "csv", "--workers", "1",
                  "--device", "cpu"],
    }[name], out


@pytest.mark.parametrize("name", ["knn", "knn-compare", "linear", "linear-paper", "finetune", "transfer"])
def test_evaluation_skips_and_counts_bad_files(name, bad_tree, run_dir, tmp_path, capsys):
    argv, out = command(name, bad_tree, tmp_path, run_dir)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    skipped_once(err)
    check_record(json.loads(Path(out).read_text()))


def test_embed_skips_bad_files_and_leaves_them_out_of_the_index(bad_tree, run_dir, tmp_path, capsys):
    argv, _ = command("embed", bad_tree, tmp_path, run_dir)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    skipped_once(err)
    meta = json.loads((tmp_path / "emb.meta.json").read_text())
    check_record(meta)
    rows = np.load(tmp_path / "emb.npy").shape[0]
    index = (tmp_path / "emb.index.csv").read_text()
    assert rows == len(list((bad_tree / "train").rglob("*.*"))) - 2
    assert not any(b in index for b in BAD)


@pytest.mark.parametrize("name", ["knn", "linear", "linear-paper", "finetune", "transfer", "embed"])
def test_strict_data_refuses_before_any_work(name, bad_tree, run_dir, tmp_path, capsys, no_work):
    argv, _ = command(name, bad_tree, tmp_path, run_dir)
    code = main([*argv, "--strict-data"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "--strict-data" in err and "barlowtwins.errors" not in err, err
    assert all(b in err for b in BAD), err


def test_neighbors_skips_unreadable_queries_and_sheet_images(bad_tree, run_dir, tmp_path, capsys):
    train = bad_tree / "train"
    (train / "cat" / BAD[0]).rename(tmp_path / BAD[0])  # embedded while readable; unreadable queries below
    (train / "cat" / BAD[1]).rename(tmp_path / BAD[1])
    argv, _ = command("embed", bad_tree, tmp_path, run_dir)
    assert main(argv) == 0
    capsys.readouterr()
    good = sorted(train.rglob("*.jpg"))
    victim = good[1]  # in the index; cut short after the embedding: its cell of the sheet is skipped
    victim.write_bytes(victim.read_bytes()[:200])
    queries = [str(good[2]), str(tmp_path / BAD[0]), str(tmp_path / BAD[1])]
    sheet = tmp_path / "sheet.png"
    base = ["neighbors", "--embeddings", str(tmp_path / "emb.npy"), "--query", *queries, "--k", "50",
            "--sheet", str(sheet), "--workers", "0", "--device", "cpu"]
    code = main(base)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    skipped_once(captured.err.replace("3 unreadable", "2 unreadable"))
    assert captured.err.count(victim.name) == 1 and "skipped 3 unreadable files" in captured.err, captured.err
    assert sheet.is_file() and captured.out.count(":\n") == 1  # one readable query, its neighbours listed
    code = main([*base, "--strict-data"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and all(b in err for b in BAD), err


def test_detect_skips_bad_train_and_test_images(tmp_path, capsys):
    from detection_shapes import make_voc_shapes

    root = make_voc_shapes(tmp_path / "voc", n_trainval=4, n_test=3)
    images = root / "VOCdevkit" / "VOC2007" / "JPEGImages"
    train_ids = (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt").read_text().split()
    test_ids = (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text().split()
    cut, noise = images / f"{train_ids[0]}.jpg", images / f"{test_ids[0]}.jpg"
    cut.write_bytes(cut.read_bytes()[:300])
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    out = tmp_path / "det.json"
    argv = ["detect", "--random-init", "--dataset", "voc", "--data-dir", str(root), "--train-sets", "2007-trainval",
            "--backbone", "resnet18", "--width", "4", "--iterations", "3", "--batch-size", "2", "--min-size", "48",
            "--max-size", "64", "--workers", "0", "--log-every", "1", "--rois-per-image", "32", "--output", str(out)]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert err.count(cut.name) == 1 and err.count(noise.name) == 1 and "skipped 2 unreadable" in err, err
    record = json.loads(out.read_text())
    assert record["skipped_files"] == 2 and record["num_test"] == 2, record
    assert {s["reason"] for s in record["skipped"]} == {"truncated", "not an image"}
    code = main([*argv, "--strict-data"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and cut.name in err and noise.name in err, err


def test_cached_features_still_count_the_skipped_files(bad_tree, tmp_path, capsys):
    argv, out = command("knn", bad_tree, tmp_path)
    argv = [a for a in argv if a != "--no-cache"] + ["--cache-dir", str(tmp_path / "cache")]
    assert main(argv) == 0
    first = json.loads(Path(out).read_text())
    capsys.readouterr()
    assert main(argv) == 0  # the features come from the cache this time
    captured = capsys.readouterr()
    assert "reusing features" in captured.out
    skipped_once(captured.err)
    second = json.loads(Path(out).read_text())
    check_record(second)
    assert second["metrics"] == first["metrics"] and second["num_train"] == first["num_train"]
