"""The evaluation commands end to end on tiny data the tests write, and the transfer/subset readers."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from barlowtwins.cli import main
from barlowtwins.data.datasets import labelled_folder
from barlowtwins.data.subsets import (
    balanced_subset,
    imagenet_subset,
    imagenet_subset_names,
    parse_subset_lines,
    read_subset_file,
)
from barlowtwins.data.transfer import VOC_CLASSES, inaturalist2018, places205, voc2007
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.protocols import LINEAR_PROTOCOLS, LinearProtocol, linear_protocol, register_linear_protocol
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.save import backbone_state

ARCH = ["--backbone", "resnet18", "--width", "8", "--stem", "small", "--image-size", "16", "--workers", "0"]


@pytest.fixture
def weights(tmp_path):
    path = tmp_path / "backbone.pth"
    torch.manual_seed(0)
    save_atomic(backbone_state(create_backbone("resnet18", width=8, stem="small")), path)
    return path


def _image(path, colour):
    arr = np.full((24, 24, 3), 30, dtype=np.uint8)
    arr[4:20, 4:20] = colour
    Image.fromarray(arr).save(path)


def test_linear_fast_and_paper(weights, image_tree, tmp_path, capsys):
    out = tmp_path / "res"
    out.mkdir()
    assert main(["linear", "--checkpoint", str(weights), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--epochs", "5", "--flip", "--output", str(out), *ARCH]) == 0
    rec = json.loads((out / "linear-fast-folder.json").read_text())
    assert rec["protocol"] == "linear-fast" and rec["hyperparameters"]["flip"] is True
    assert 0 <= rec["metrics"]["top1"] <= 100 and len(rec["hyperparameters"]["grid"]) == 20
    assert rec["checkpoint_sha256"] and rec["backbone"]["width"] == 8
    assert main(["linear", "--protocol", "paper", "--checkpoint", str(weights), "--dataset", "folder",
                 "--data-dir", str(image_tree), "--epochs", "2", "--batch-size", "4", "--output", str(out), *ARCH]) == 0
    rec = json.loads((out / "linear-paper-folder.json").read_text())
    hp = rec["hyperparameters"]
    assert hp["backbone_unchanged"] and len(hp["history"]) == 2 and hp["lr"] == pytest.approx(0.3 * 4 / 256)
    assert set(rec["metrics"]) == {"last", "best"}
    assert "linear (paper) folder val" in capsys.readouterr().out


def test_finetune_subset_is_balanced_saved_and_repeatable(weights, image_tree, tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        out.mkdir()
        assert main(["finetune", "--checkpoint", str(weights), "--dataset", "folder", "--data-dir", str(image_tree),
                     "--train-percent", "50", "--epochs", "1", "--batch-size", "4", "--seed", "3",
                     "--output", str(out), *ARCH]) == 0
        runs.append(out)
    a = (runs[0] / "finetune-folder-50pct.subset.txt").read_text().split()
    b = (runs[1] / "finetune-folder-50pct.subset.txt").read_text().split()
    assert a == b and len(a) == 6
    assert sum(name.startswith("cat") for name in a) == 3  # 3 of 6 per class
    rec = json.loads((runs[0] / "finetune-folder-50pct.json").read_text())
    hyper = rec["hyperparameters"]
    assert hyper["num_train"] == 6 and hyper["lr_head"] == pytest.approx(0.5 * 4 / 256)
    # The saved list trains on the same images when given back.
    train = labelled_folder(image_tree, "train")
    idx = read_subset_file(runs[0] / "finetune-folder-50pct.subset.txt", train)
    assert sorted(train.files[i].rsplit("/", 1)[1] for i in idx) == sorted(a)


def test_balanced_subset_determinism():
    labels = torch.arange(1000) % 10
    a, b = balanced_subset(labels, 10, seed=1), balanced_subset(labels, 10, seed=1)
    assert torch.equal(a, b) and len(a) == 100
    assert torch.bincount(labels[a]).tolist() == [10] * 10
    assert not torch.equal(a, balanced_subset(labels, 10, seed=2))
    with pytest.raises(DataError, match="train-percent"):
        balanced_subset(labels, 0)


def test_imagenet_lists_match_a_fake_imagenet_tree(tmp_path):
    names = imagenet_subset_names(1)
    assert len(names) == 12811 and len(imagenet_subset_names(10)) == 128116
    parsed = parse_subset_lines(names)
    wnids = sorted({w for w, _ in parsed})
    assert len(wnids) == 1000 and all(w.startswith("n") and len(w) == 9 for w in wnids)
    train = tmp_path / "imagenet" / "train"
    for w in wnids:
        (train / w).mkdir(parents=True)
        (train / w / f"{w}_distractor.JPEG").touch()
    for w, name in parsed:
        (train / w / name).touch()
    ds = labelled_folder(tmp_path / "imagenet", "train")
    idx = imagenet_subset(ds, 1)
    assert len(idx) == 12811
    picked = [ds.files[i] for i in idx.tolist()]
    assert all(p.rsplit("/", 2)[1] == p.rsplit("/", 1)[1].split("_")[0] for p in picked)  # class = wnid prefix
    assert not any("distractor" in p for p in picked)
    (train / parsed[0][0] / parsed[0][1]).unlink()
    with pytest.raises(DataError, match="1 of 12811 images of the ImageNet 1% list are not in the data set"):
        imagenet_subset(labelled_folder(tmp_path / "imagenet", "train"), 1)


def _fake_voc(root):
    base = root / "VOCdevkit" / "VOC2007"
    (base / "JPEGImages").mkdir(parents=True)
    (base / "ImageSets" / "Main").mkdir(parents=True)
    rng = np.random.default_rng(0)
    splits = {"trainval": [f"{i:06d}" for i in range(1, 25)], "test": [f"{i:06d}" for i in range(25, 37)]}
    for split, ids in splits.items():
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        labels = {i: (rng.random(len(VOC_CLASSES)) < 0.3) for i in ids}
        for c, cls in enumerate(VOC_CLASSES):
            lines = []
            for j, i in enumerate(ids):
                v = 1 if labels[i][c] or j == c % len(ids) else -1
                if j == 1 and c == 0:
                    v = 0  # difficult
                lines.append(f"{i} {v:2d}")
            (base / "ImageSets" / "Main" / f"{cls}_{split}.txt").write_text("\n".join(lines) + "\n")
        for i in ids:
            _image(base / "JPEGImages" / f"{i}.jpg", tuple(int(v) for v in rng.integers(0, 255, 3)))
    return root


def test_voc2007_reader_and_svm_transfer(weights, tmp_path):
    root = _fake_voc(tmp_path / "voc")
    ds = voc2007(root, "trainval")
    assert len(ds) == 24 and ds.targets.shape == (24, 20)
    assert int(ds.targets[1, 0]) == -1 and set(ds.targets.unique().tolist()) <= {-1, 0, 1}
    out = tmp_path / "res"
    out.mkdir()
    assert main(["transfer", "--checkpoint", str(weights), "--dataset", "voc2007", "--data-dir", str(root),
                 "--output", str(out), *ARCH]) == 0
    rec = json.loads((out / "transfer-svm-voc2007.json").read_text())
    assert 0 <= rec["metrics"]["mAP"] <= 100 and len(rec["hyperparameters"]["per_class_AP"]) == 20


def test_inaturalist_and_places_readers(tmp_path):
    inat = tmp_path / "inat"
    (inat / "train_val2018" / "Plantae" / "7").mkdir(parents=True)
    imgs = [{"id": i, "file_name": f"train_val2018/Plantae/7/{i}.jpg"} for i in range(4)]
    anns = [{"id": i, "image_id": i, "category_id": [5, 9][i % 2]} for i in range(4)]
    cats = [{"id": 5, "name": "a"}, {"id": 9, "name": "b"}]
    for name in ("train2018.json", "val2018.json"):
        (inat / name).write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    ds = inaturalist2018(inat, "train")
    assert ds.labels.tolist() == [0, 1, 0, 1] and ds.files[1].endswith("Plantae/7/1.jpg")
    (inat / "val2018.json").write_text("{}")
    with pytest.raises(DataError, match="not an iNaturalist annotation file"):
        inaturalist2018(inat, "val")

    places = tmp_path / "places"
    (places / "trainvalsplit_places205").mkdir(parents=True)
    (places / "images256" / "a" / "abbey").mkdir(parents=True)
    (places / "trainvalsplit_places205" / "train_places205.csv").write_text("a/abbey/x.jpg 0\nb/bar/y.jpg 3\n")
    ds = places205(places, "train")
    assert ds.labels.tolist() == [0, 3] and ds.files[0].endswith("images256/a/abbey/x.jpg") and len(ds.classes) == 4
    (places / "trainvalsplit_places205" / "val_places205.csv").write_text("a/abbey/x.jpg\n")
    with pytest.raises(DataError, match="expected '<relative path> <label>'"):
        places205(places, "val")


def test_protocol_functions_return_typed_results(weights, image_tree):
    from barlowtwins.evaluate.backbone import load_eval_backbone
    from barlowtwins.evaluate.protocols import knn_protocol, linear_protocol
    from barlowtwins.evaluate.results import EvalResult

    setup = load_eval_backbone(str(weights), backbone="resnet18", width=8, stem="small", image_size=16,
                               device="cpu", cache_dir=None)
    train, val = labelled_folder(image_tree, "train"), labelled_folder(image_tree, "val")
    names = ("folder", "train", "val")
    knn = knn_protocol(setup, train, val, names=names, k=(3,), workers=0)
    assert isinstance(knn, EvalResult) and knn.protocol == "knn" and set(knn.metrics) == {"k=3"}
    record = knn.to_record()
    assert {"protocol", "dataset", "split", "train_split", "hyperparameters", "metrics", "num_train", "num_test",
            "seconds", "checkpoint", "checkpoint_sha256", "backbone", "image_size", "random_init"} <= set(record)
    assert record["num_test"] == 12 and record["backbone"]["width"] == 8
    lin = linear_protocol(setup, train, val, names=names, epochs=2, workers=0, prefix="transfer-linear", counts=True)
    assert lin.protocol == "transfer-linear-fast" and lin.to_record()["num_train"] == 12
    assert lin.summary().startswith("top-1 ") and 0 <= lin.metrics["top1"] <= 100


@pytest.fixture
def toy_protocol():
    """A linear protocol registered for one test: it reports what it was given instead of training."""
    seen = {}

    def nearest_mean(setup, train, val, names, options):
        seen.update(names=names, options=options, sizes=(len(train), len(val)))
        return {"top1": 50.0}, {"epochs": options.epochs, "lr": options.lr}

    saved = dict(LINEAR_PROTOCOLS)
    register_linear_protocol(LinearProtocol("toy", nearest_mean, 7, "reports its inputs"))
    yield seen
    LINEAR_PROTOCOLS.clear()
    LINEAR_PROTOCOLS.update(saved)


def test_a_registered_linear_protocol_runs_from_linear_and_transfer(toy_protocol, weights, image_tree, tmp_path,
                                                                    capsys):
    out = tmp_path / "res"
    out.mkdir()
    assert main(["linear", "--protocol", "toy", "--checkpoint", str(weights), "--dataset", "folder", "--data-dir",
                 str(image_tree), "--lr", "0.5", "--output", str(out), *ARCH]) == 0
    rec = json.loads((out / "linear-toy-folder.json").read_text())
    assert rec["protocol"] == "linear-toy" and rec["hyperparameters"] == {"epochs": 7, "lr": 0.5}
    assert toy_protocol["names"] == ("folder", "train", "val") and toy_protocol["sizes"] == (12, 12)
    assert "linear (toy) folder val" in capsys.readouterr().out
    assert main(["transfer", "--protocol", "toy", "--epochs", "3", "--checkpoint", str(weights), "--dataset",
                 "folder", "--data-dir", str(image_tree), "--output", str(out), *ARCH]) == 0
    rec = json.loads((out / "transfer-linear-toy-folder.json").read_text())
    assert rec["hyperparameters"]["epochs"] == 3 and rec["num_train"] == 12


def test_an_unknown_linear_protocol_names_the_choices():
    with pytest.raises(ConfigError, match="unknown linear protocol 'slow'; choose one of fast, paper"):
        linear_protocol(None, [], [], names=("a", "b", "c"), protocol="slow")
