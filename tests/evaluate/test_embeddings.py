"""embed / neighbors: a folder of real JPEG and PNG files -> one row per image; each image finds itself."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from barlowtwins.cli import main
from barlowtwins.evaluate.embeddings import cosine_neighbors, read_embeddings, sidecar_paths
from barlowtwins.models.backbones import create_backbone
from barlowtwins.weights.save import write_run_backbone


@pytest.fixture
def run_dir(tmp_path):
    torch.manual_seed(0)
    net = create_backbone("resnet18", stem="small", width=8)
    cfg = {"backbone": "resnet18", "stem": "small", "width": 8, "image_size": 24}
    write_run_backbone(net, tmp_path / "run", cfg)
    (tmp_path / "run" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    return tmp_path / "run"


def _embed(run_dir, images, out, *extra):
    return main(["embed", "--checkpoint", str(run_dir), "--data-dir", str(images), "--output", str(out),
                 "--batch-size", "5", "--workers", "0", "--device", "cpu", *extra])


def test_embed_a_folder_one_row_per_image_and_each_finds_itself(run_dir, tmp_path, capsys):
    images = make_image_folder(tmp_path / "imgs", per_class=5, splits=("train",))
    out = tmp_path / "emb.npy"
    assert _embed(run_dir, images, out, "--index-format", "csv") == 0
    assert "wrote 10 x 64 float32 embeddings" in capsys.readouterr().out  # width 8 -> 8*8 features

    files = sorted(str(p.resolve()) for p in images.rglob("*") if p.suffix in (".jpg", ".png"))
    array = np.load(out)
    assert array.dtype == np.float32 and array.shape == (10, 64) and np.isfinite(array).all()
    with open(sidecar_paths(out)["csv"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == files and [int(r["row"]) for r in rows] == list(range(10))
    meta = json.loads(sidecar_paths(out)["meta"].read_text())
    assert meta["image_size"] == 24 and meta["arch"]["width"] == 8 and meta["count"] == 10
    assert meta["checkpoint_sha256"]

    # Rows are in index order: the row of a file is that file's own embedding (independent re-encoding).
    from barlowtwins.evaluate.backbone import load_eval_backbone
    from barlowtwins.evaluate.embeddings import embed_image_files

    setup = load_eval_backbone(str(run_dir), device="cpu", precision="fp32", cache_dir=None)
    again = embed_image_files(setup, [rows[3]["path"], rows[7]["path"]])
    torch.testing.assert_close(again, torch.from_numpy(array[[3, 7]]), rtol=1e-4, atol=1e-5)

    sims, nearest = cosine_neighbors(torch.from_numpy(array), torch.from_numpy(array), k=2)
    assert nearest[:, 0].tolist() == list(range(10))  # every image's nearest neighbour is itself
    torch.testing.assert_close(sims[:, 0], torch.ones(10), rtol=0, atol=1e-5)
    assert (sims[:, 1] < sims[:, 0]).all()


def test_cosine_neighbors_against_a_float64_reference():
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(4, 16, generator=g), torch.randn(50, 16, generator=g)
    sims, rows = cosine_neighbors(q, db, k=5)
    ref = (q.double() / q.double().norm(dim=1, keepdim=True)) @ (db.double() / db.double().norm(dim=1, keepdim=True)).T
    want = torch.sort(ref, dim=1, descending=True)
    torch.testing.assert_close(sims.double(), want.values[:, :5], rtol=1e-5, atol=1e-6)
    assert rows.tolist() == want.indices[:, :5].tolist()
    assert cosine_neighbors(q * 3, db, k=5)[1].tolist() == rows.tolist()  # scale-invariant
    assert cosine_neighbors(q, db[:3], k=5)[1].shape == (4, 3)  # k larger than the database


def test_neighbors_prints_ranked_matches_and_draws_a_sheet(run_dir, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    images = make_image_folder(tmp_path / "imgs", per_class=4, splits=("train",))
    out = tmp_path / "emb.npy"
    assert _embed(run_dir, images, out) == 0  # auto: parquet with pyarrow installed
    assert sidecar_paths(out)["parquet"].is_file() and len(read_embeddings(out).entries) == 8
    capsys.readouterr()
    queries = [str(images / "train" / "cat" / "cat_1.png"), str(images / "train" / "dog" / "dog_2.jpg")]
    sheet = tmp_path / "sheet.png"
    assert main(["neighbors", "--embeddings", str(out), "--query", *queries, "--k", "3", "--sheet", str(sheet),
                 "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    for q in queries:
        i = printed.index(f"{q}:")
        first = printed[i + 1].split()
        assert first[0] == "1." and first[2] == str((images / q).resolve()) and float(first[1]) > 0.9999
        assert printed[i + 3].lstrip().startswith("3.")
    with Image.open(sheet) as img:
        assert img.size == (4 * 132 + 4, 2 * 146 + 4)  # 1 query + 3 neighbours; 2 rows


def test_neighbors_refuses_a_backbone_that_changed(run_dir, tmp_path, capsys):
    images = make_image_folder(tmp_path / "imgs", per_class=2, splits=("train",))
    out = tmp_path / "emb.npy"
    assert _embed(run_dir, images, out, "--index-format", "csv") == 0
    torch.manual_seed(1)
    write_run_backbone(create_backbone("resnet18", stem="small", width=8), run_dir)  # training went on
    capsys.readouterr()
    q = str(next((images / "train" / "cat").iterdir()))
    assert main(["neighbors", "--embeddings", str(out), "--query", q, "--device", "cpu"]) == 2
    assert "changed since" in capsys.readouterr().err
    # Naming the backbone explicitly queries with it (the preprocessing still follows the embeddings file).
    assert main(["neighbors", "--embeddings", str(out), "--query", q, "--device", "cpu", "--k", "2",
                 "--checkpoint", str(run_dir)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].lstrip().startswith("2.")


@pytest.mark.parametrize("args,message", [
    (["embed", "--checkpoint", "{run}", "--data-dir", "{imgs}", "--output", "emb.txt"], "with .npy"),
    (["embed", "--checkpoint", "{run}", "--data-dir", "/nonexistent", "--output", "{tmp}/e.npy"], "does not exist"),
    (["neighbors", "--embeddings", "{tmp}/none.npy", "--query", "{imgs}/train/cat/cat_0.jpg"], "does not exist"),
    (["neighbors", "--embeddings", "{tmp}/none.npy", "--query", "{tmp}/missing.jpg"], "query image"),
])
def test_bad_input_is_one_line(args, message, run_dir, tmp_path, capsys):
    images = make_image_folder(tmp_path / "imgs", per_class=1, splits=("train",))
    argv = [a.format(run=run_dir, imgs=images, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_embed_in_memory_data_set(run_dir, fmnist_dir, tmp_path, capsys):
    out = tmp_path / "fm.npy"
    assert main(["embed", "--checkpoint", str(run_dir), "--dataset", "fashion-mnist", "--data-dir", str(fmnist_dir),
                 "--split", "test", "--output", str(out), "--index-format", "csv", "--workers", "0",
                 "--device", "cpu", "--image-size", "16"]) == 0
    emb = read_embeddings(out)
    assert emb.features.shape == (32, 64) and emb.entries[5] == "fashion-mnist:test:5"
    from barlowtwins.evaluate.embeddings import contact_sheet

    path = contact_sheet([emb.entries[0]], [[(emb.entries[1], 0.5)]], tmp_path / "s.png", emb.meta, thumb=32)
    assert Image.open(path).size == (2 * 36 + 4, 36 + 14 + 4)


def test_embed_under_two_processes_matches_one(run_dir, tmp_path):
    import dist_workers
    from conftest import spawn

    images = make_image_folder(tmp_path / "imgs", per_class=3, splits=("train",), classes=("a", "b", "c"))
    args = ["embed", "--checkpoint", str(run_dir), "--data-dir", str(images), "--batch-size", "2", "--workers", "0",
            "--device", "cpu", "--index-format", "csv", "--precision", "fp32"]
    assert main([*args, "--output", str(tmp_path / "one.npy")]) == 0
    spawn(dist_workers.cli_worker, [*args, "--output", str(tmp_path / "two.npy")])  # 9 images over 2 ranks
    one, two = read_embeddings(tmp_path / "one.npy"), read_embeddings(tmp_path / "two.npy")
    assert two.features.shape == (9, 64) and two.entries == one.entries
    np.testing.assert_allclose(two.features, one.features, rtol=1e-5, atol=1e-6)
