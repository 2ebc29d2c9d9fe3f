"""`load_backbone`: the architecture from the source, explicit arguments, a new head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from conftest import random_images, reference_backbone

from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.load import load_backbone
from barlowtwins.weights.save import save_backbone


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    net = create_backbone("resnet18", stem="small", width=8)
    return net, save_backbone(net, tmp_path / "backbone.safetensors")


def test_loaded_backbone_is_in_eval_mode_with_identity_head(saved):
    net, path = saved
    loaded = load_backbone(path)
    assert not loaded.training and isinstance(loaded.fc, torch.nn.Identity)
    with torch.no_grad():
        assert loaded(torch.randn(2, 3, 16, 16)).shape == (2, net.num_features)


def test_new_head_is_a_fresh_linear_of_the_feature_width(saved):
    net, path = saved
    loaded = load_backbone(path, num_classes=5)
    assert isinstance(loaded.fc, torch.nn.Linear) and (loaded.fc.in_features, loaded.fc.out_features) == (64, 5)
    torch.testing.assert_close(loaded.conv1.weight, net.conv1.weight)


def test_explicit_arguments_win_over_the_recorded_architecture(saved):
    _, path = saved
    with pytest.raises(CheckpointError, match=r"does not match .*conv1.weight \(8, 3, 3, 3\) vs \(16, 3, 3, 3\)"):
        load_backbone(path, width=16)  # asked for width 16 over the recorded 8: the weights cannot fit
    assert load_backbone(path, stem="small-pool").maxpool.kernel_size == 3  # the same weights, another stem


REPO = Path(__file__).resolve().parents[2]


ARCH = dict(stem="small", width=8)






@pytest.mark.parametrize("source", ["folder", "backbone.pth", "backbone.safetensors", "checkpoint.pth", "official"])
def test_load_backbone_reads_every_source(run_dir, tmp_path, source):
    ref = reference_backbone(run_dir)
    if source == "folder":
        path = run_dir
    elif source == "checkpoint.pth":
        path = tmp_path / "ckpt" / "checkpoint.pth"
        state = {"backbone." + k: v for k, v in ref.state_dict().items()}
        save_atomic({"model": state, "config": {"backbone": "resnet18", "stem": "small", "width": 8}}, path)
    elif source == "official":  # DDP-prefixed full training checkpoint
        path = tmp_path / "official.pth"
        save_atomic({"epoch": 1, "model": {"module.backbone." + k: v for k, v in ref.state_dict().items()}}, path)
    else:
        path = run_dir / source
    kw = {} if source in ("folder", "backbone.safetensors", "checkpoint.pth") else {"backbone": "resnet18", **ARCH}
    net = load_backbone(path, **kw)
    assert isinstance(net, torchvision.models.ResNet) and isinstance(net.fc, torch.nn.Identity)
    assert not net.training
    with torch.no_grad():
        torch.testing.assert_close(net(random_images()), ref(random_images()), rtol=0, atol=0)


def test_load_backbone_with_a_new_head(run_dir):
    net = load_backbone(run_dir, num_classes=7)
    assert isinstance(net.fc, torch.nn.Linear) and net.fc.out_features == 7 and net(random_images()).shape == (3, 7)


def test_torch_hub_load_local(run_dir):
    ref = reference_backbone(run_dir)
    net = torch.hub.load(str(REPO), "resnet18", source="local", weights=str(run_dir / "backbone.pth"), **ARCH)
    assert isinstance(net, torchvision.models.ResNet) and isinstance(net.fc, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(random_images()), ref(random_images()), rtol=0, atol=0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    assert all(callable(getattr(hub, n)) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"))
    plain = torch.hub.load(str(REPO), "resnet50", source="local", num_classes=1000)
    assert plain.fc.out_features == 1000  # no weights: torchvision's random init, with a head when asked


def test_a_feature_extractor_comes_back_in_eval_mode_a_classifier_in_train_mode_of_a_public_class(saved):
    """``num_classes=N`` asks for a classifier to fine-tune: train mode, as a freshly built torchvision model;
    features come back in eval mode. A narrow ResNet is the public `WidthResNet`, a torchvision ResNet."""
    import barlowtwins
    from barlowtwins.models.backbones import WidthResNet

    _, path = saved
    features, classifier = load_backbone(path), load_backbone(path, num_classes=3)
    assert not features.training and classifier.training
    assert all(m.training for m in classifier.modules())
    assert type(features) is WidthResNet and not type(features).__name__.startswith("_")
    assert isinstance(features, torchvision.models.ResNet) and barlowtwins.WidthResNet is WidthResNet
    assert WidthResNet.__doc__ and "create_backbone" in WidthResNet.__doc__
    assert "train mode" in load_backbone.__doc__ and "eval mode" in load_backbone.__doc__
