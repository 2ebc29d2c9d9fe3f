"""`barlowtwins shard` end to end on a folder the test writes (with a corrupt file), a resumed shard run, and
pretraining then kNN on the shards through the CLI."""

import json

import pytest
from conftest import make_image_folder

from barlowtwins.cli import main

TINY = ["--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
        "--no-progress", "--workers", "0"]


@pytest.fixture
def folder(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=8, size=24, splits=("train", "val"))
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_shard_then_pretrain_and_knn_on_the_shards(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    for split in ("train", "val"):
        assert main(["shard", "--dataset", "folder", "--data-dir", str(folder), "--split", split,
                     "--out", str(out / split), "--shard-size", "5KB", "--workers", "2"]) == 0
    captured = capsys.readouterr()
    assert "wrote 16 images in" in captured.out and "--dataset webdataset --data-dir" in captured.out
    assert "skipped 1 unreadable file" in captured.err and "broken.jpg" in captured.err
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert sum(len(s["samples"]) for s in manifest["shards"]) == 16 and len(manifest["shards"]) > 2

    run = tmp_path / "run"
    assert main(["pretrain", "--dataset", "webdataset", "--data-dir", str(out), "--epochs", "1", "--batch-size", "4",
                 "--warmup-epochs", "0.5", "--out", str(run), *TINY]) == 0
    assert "pretrained 4 steps" in capsys.readouterr().out
    assert main(["knn", "--checkpoint", str(run), "--dataset", "webdataset", "--data-dir", str(out), "--k", "3",
                 "--workers", "0"]) == 0
    record = json.loads((run / "eval" / "knn-webdataset.json").read_text())
    assert record["num_test"] == 16 and record["split"] == "val"


def test_an_interrupted_shard_run_keeps_its_complete_shards(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["shard", "--dataset", "folder", "--data-dir", str(folder), "--out", str(out), "--shard-size", "5KB"]
    assert main(args) == 0
    first = sorted(out.glob("*.tar"))
    manifest = json.loads((out / "manifest.json").read_text())
    # as if stopped after two shards: the others gone, a half-written temporary left behind
    for p in first[2:]:
        p.unlink()
    (out / ".train-000099.tar.123.tmp").write_bytes(b"half")
    assert main(args) == 0
    assert "(2 kept from an earlier run" in capsys.readouterr().out
    assert sorted(out.glob("*.tar")) == first and not list(out.glob(".*.tmp"))
    assert json.loads((out / "manifest.json").read_text())["shards"] == manifest["shards"]


def test_bad_flags_are_one_line(folder, tmp_path, capsys):
    assert main(["shard", "--data-dir", str(folder), "--out", str(tmp_path / "s"), "--shard-size", "lots"]) == 2
    assert "--shard-size lots: give a size such as 500MB" in capsys.readouterr().err
    assert main(["pretrain", "--dataset", "webdataset", "--data-dir", str(tmp_path / "none-{0..3}.tar"),
                 "--out", str(tmp_path / "r"), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_run_on_shards_stopped_mid_epoch_and_resumed_ends_with_the_straight_runs_weights(folder, tmp_path):
    import torch

    out = tmp_path / "shards"
    assert main(["shard", "--dataset", "folder", "--data-dir", str(folder), "--out", str(out),
                 "--shard-size", "5KB"]) == 0
    base = ["pretrain", "--dataset", "webdataset", "--data-dir", str(out), "--epochs", "2", "--batch-size", "4",
            "--warmup-epochs", "0.5", *TINY]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--max-steps", "3"]) == 0  # 4 steps an epoch: mid-epoch
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    a = torch.load(tmp_path / "a" / "backbone.pth", weights_only=True)
    b = torch.load(tmp_path / "b" / "backbone.pth", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_linear_and_embed_read_a_hugging_face_table(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    from PIL import Image

    def table(n):
        rows = []
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (20, 20), (200 * (i % 2), 80, 40)).save(buf, format="PNG")
            rows.append(buf.getvalue())
        return pa.table({"picture": rows, "y": [i % 2 for i in range(n)]})

    (tmp_path / "hf").mkdir()
    pq.write_table(table(8), tmp_path / "hf" / "train-0.parquet")
    pq.write_table(table(6), tmp_path / "hf" / "test-0.parquet")
    arch = ["--backbone", "resnet18", "--width", "8", "--stem", "small", "--image-size", "16"]
    assert main(["linear", "--random-init", *arch, "--dataset", "hf", "--data-dir",
                 str(tmp_path / "hf"), "--val-split", "test", "--label-column", "y", "--epochs", "2", "--workers", "0",
                 "--output", str(tmp_path / "lin.json")]) == 0
    record = json.loads((tmp_path / "lin.json").read_text())
    assert record["dataset"] == "hf" and record["split"] == "test" and 0 <= record["metrics"]["top1"] <= 100
    from barlowtwins import create_backbone, save_backbone

    save_backbone(create_backbone("resnet18", stem="small", width=8), tmp_path / "net.safetensors")
    assert main(["embed", "--checkpoint", str(tmp_path / "net.safetensors"), "--image-size", "16", "--dataset", "hf",
                 "--data-dir",
                 str(tmp_path / "hf"), "--image-column", "picture", "--output", str(tmp_path / "e.npy"),
                 "--workers", "0"]) == 0
    import numpy as np

    assert np.load(tmp_path / "e.npy").shape[0] == 8


def test_a_shard_rerun_with_another_plan_or_a_bad_prefix_is_one_line_exit_2(folder, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["shard", "--dataset", "folder", "--data-dir", str(folder), "--out", str(out)]
    assert main([*args, "--shard-size", "5KB"]) == 0
    before = sorted(p.name for p in out.glob("*.tar"))
    capsys.readouterr()
    assert main([*args, "--shard-size", "20KB"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another plan (--shard-size (5000 then, 20000 now))" in err
    assert "--overwrite" in err and sorted(p.name for p in out.glob("*.tar")) == before
    assert main([*args, "--shard-size", "20KB", "--overwrite"]) == 0
    assert f"replaced the {len(before)} shards of an earlier run" in capsys.readouterr().out
    assert main([*args, "--prefix", "a/b"]) == 2
    assert "--prefix 'a/b': give a plain name" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["pretrain", "knn", "linear", "embed"])
def test_a_table_with_float_labels_is_the_same_line_in_every_command(tmp_path, capsys, command):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    import io

    from PIL import Image

    rows = []
    for i in range(6):
        buf = io.BytesIO()
        Image.new("RGB", (20, 20), (200 * (i % 2), 80, 40)).save(buf, format="PNG")
        rows.append(buf.getvalue())
    (tmp_path / "hf").mkdir()
    for split in ("train", "test"):
        pq.write_table(pa.table({"image": rows, "label": [0.5 * i for i in range(6)]}),
                       tmp_path / "hf" / f"{split}-0.parquet")
    arch = ["--backbone", "resnet18", "--width", "8", "--stem", "small", "--image-size", "16"]
    data = ["--dataset", "hf", "--data-dir", str(tmp_path / "hf"), "--workers", "0"]
    if command == "pretrain":
        args = ["pretrain", *data, *arch, "--projector", "32-32", "--no-progress", "--out", str(tmp_path / "r")]
    elif command == "embed":
        from barlowtwins import create_backbone, save_backbone

        save_backbone(create_backbone("resnet18", stem="small", width=8), tmp_path / "net.safetensors")
        args = ["embed", "--checkpoint", str(tmp_path / "net.safetensors"), "--image-size", "16", *data,
                "--output", str(tmp_path / "e.npy")]
    else:
        args = [command, "--random-init", *arch, *data, "--val-split", "test"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "column 'label': label 0 is the float 0.0" in err[0], err
    assert not (tmp_path / "r").exists()
