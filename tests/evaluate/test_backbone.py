"""`load_eval_backbone`: the backbone an evaluation runs on, built from what its source records (explicit
arguments win), its weights loaded or a random-init baseline, and its features cached beside a run folder."""

import pytest
import torch
from conftest import random_images, reference_backbone

from barlowtwins.data.datasets import build_dataset
from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.backbone import load_eval_backbone
from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD


def test_a_run_folder_gives_the_architecture_weights_size_and_a_cache(run_dir, capsys):
    setup = load_eval_backbone(str(run_dir), device="cpu")
    assert "loaded" in capsys.readouterr().out and setup.loaded_keys > 0
    assert {k: setup.arch[k] for k in ("backbone", "stem", "width")} == {"backbone": "resnet18", "stem": "small",
                                                                         "width": 8}
    assert setup.image_size == 16 and setup.device.type == "cpu" and setup.amp_dtype is None
    assert setup.mean == IMAGENET_MEAN and setup.std == IMAGENET_STD
    assert setup.cache_dir == str(run_dir / "eval" / "cache") and setup.checkpoint_sha256
    assert setup.backbone_features == 64  # a width-8 ResNet-18's last stage
    x = random_images(2)
    with torch.no_grad():
        torch.testing.assert_close(setup.backbone.eval()(x), reference_backbone(run_dir)(x))
    assert setup.describe() == {"checkpoint": setup.checkpoint, "checkpoint_sha256": setup.checkpoint_sha256,
                                "backbone": {"backbone": "resnet18", "stem": "small", "width": 8},
                                "image_size": 16, "random_init": False}


def test_explicit_arguments_win_over_what_the_source_records(run_dir):
    setup = load_eval_backbone(str(run_dir), image_size=24, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2),
                               cache_dir=None, device="cpu")
    assert setup.image_size == 24 and setup.mean == (0.5,) * 3 and setup.std == (0.2,) * 3
    assert setup.cache_dir is None


def test_random_init_keeps_the_architecture_and_loads_nothing(run_dir):
    setup = load_eval_backbone(str(run_dir), random_init=True, device="cpu")
    assert setup.loaded_keys == 0 and setup.describe()["random_init"] is True
    assert setup.checkpoint.endswith("[random init]") and setup.arch["width"] == 8
    assert setup.cache_dir is None  # random weights: nothing worth keeping
    ref = reference_backbone(run_dir).state_dict()
    assert not torch.equal(setup.backbone.state_dict()["conv1.weight"], ref["conv1.weight"])
    again = load_eval_backbone(str(run_dir), random_init=True, device="cpu")  # the same baseline every time
    assert torch.equal(again.backbone.state_dict()["conv1.weight"], setup.backbone.state_dict()["conv1.weight"])


def test_random_init_without_a_checkpoint_needs_a_backbone():
    setup = load_eval_backbone(None, random_init=True, backbone="resnet18", stem="small", width=8, device="cpu")
    assert setup.checkpoint == "random init" and setup.checkpoint_sha256 is None and setup.image_size == 224
    with pytest.raises(ConfigError, match="give --checkpoint .*or --random-init with --backbone"):
        load_eval_backbone(None, device="cpu")
    with pytest.raises(ConfigError, match="--random-init with --backbone"):
        load_eval_backbone(None, random_init=True, device="cpu")


def test_features_are_cached_and_reused(run_dir, image_tree, capsys):
    setup = load_eval_backbone(str(run_dir), device="cpu")
    ds = build_dataset("folder", str(image_tree), "val")
    f1, y1 = setup.features(ds, "folder", "val", workers=0)
    assert f1.shape == (12, 64) and y1.tolist() == ds.labels.tolist()
    assert len(list((run_dir / "eval" / "cache").glob("features-folder-val-*.pt"))) == 1
    capsys.readouterr()
    f2, _, kept = setup.features_kept(ds, "folder", "val", workers=0)
    assert "reusing features from" in capsys.readouterr().out
    assert torch.equal(f1, f2) and kept.tolist() == list(range(12))
    f3, _ = setup.features(ds, "folder", "val", mirror=True, workers=0)  # another extraction, its own file
    assert not torch.equal(f1, f3)
    assert len(list((run_dir / "eval" / "cache").glob("features-folder-val-*.pt"))) == 2
