"""`barlowtwins embed`: a folder -> float32 embeddings, an index of its files in the same order and metadata
saying which backbone and preprocessing made them; bad output names are one line before any work."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from conftest import reference_backbone

from barlowtwins.cli import main
from barlowtwins.data.datasets import build_dataset
from barlowtwins.evaluate.features import extract_features

EMBED = ["embed", "--workers", "0", "--device", "cpu", "--index-format", "csv"]


def test_a_folder_is_embedded_with_its_index_and_metadata(run_dir, image_tree, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    assert main([*EMBED, "--checkpoint", str(run_dir), "--data-dir", str(image_tree / "train"),
                 "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"wrote 12 x 64 float32 embeddings to {out}")
    feats = np.load(out)
    assert feats.shape == (12, 64) and feats.dtype == np.float32
    with open(tmp_path / "emb.index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    files = build_dataset("images", str(image_tree / "train")).files
    assert [r["path"] for r in rows] == [os.path.abspath(p) for p in files]
    assert [int(r["row"]) for r in rows] == list(range(12)) and {r["label"] for r in rows} == {"-1"}  # unlabelled
    meta = json.loads((tmp_path / "emb.meta.json").read_text())
    assert meta["image_size"] == 16 and meta["arch"] == {"backbone": "resnet18", "stem": "small", "width": 8}
    assert meta["checkpoint"] == str(run_dir.resolve()) and meta["checkpoint_sha256"] and meta["skipped_files"] == 0
    assert meta["dataset"] == "images" and meta["split"] == "train"
    # the rows are the backbone's features of those files, in that order
    ref, _ = extract_features(reference_backbone(run_dir), build_dataset("images", str(image_tree / "train")),
                              image_size=16, device=torch.device("cpu"), workers=0)
    np.testing.assert_allclose(feats, ref.numpy(), rtol=1e-4, atol=1e-5)


def test_a_labelled_split_records_its_labels(run_dir, image_tree, tmp_path, capsys):
    out = tmp_path / "val.npy"
    assert main([*EMBED, "--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--split", "val", "--output", str(out)]) == 0
    with open(tmp_path / "val.index.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 13 and "label" in rows[0]  # a header, then one row per image
    labels = [int(r[rows[0].index("label")]) for r in rows[1:]]
    assert labels == [0] * 6 + [1] * 6


@pytest.mark.parametrize("output, message", [("emb.txt", "--output {out}: name the embeddings file with .npy"),
                                             ("emb", "--output {out}: name the embeddings file with .npy"),
                                             ("file/emb.npy", "{out}: {out.parent} is a file, not a folder")])
def test_an_output_that_cannot_be_written_is_one_line_before_any_work(run_dir, image_tree, tmp_path, capsys,
                                                                      output, message):
    (tmp_path / "file").write_text("a file, not a folder")
    out = tmp_path / output
    assert main([*EMBED, "--checkpoint", str(run_dir), "--data-dir", str(image_tree / "train"),
                 "--output", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("barlowtwins embed: error: ") and message.format(out=out) in err, err
    assert len(err.splitlines()) == 1 and "loaded" not in captured.out  # refused before the backbone was read
    assert not list(tmp_path.glob("emb*")) and (tmp_path / "file").read_text() == "a file, not a folder"


def test_the_checkpoint_is_required(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["embed", "--output", str(tmp_path / "e.npy")])
    assert e.value.code == 2 and "--checkpoint" in capsys.readouterr().err
