"""`save_backbone`: a backbone's weights with its architecture, so that `load_backbone` needs no flags."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from safetensors import safe_open

from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.models.barlow_twins import build_model
from barlowtwins.weights.load import load_backbone
from barlowtwins.weights.save import ARCH_KEY, save_backbone, write_run_backbone
from barlowtwins.weights.sources import load_backbone_state


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module, image_size: int = 16) -> None:
    x = torch.randn(3, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a.eval()(x), b.eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ["backbone.safetensors", "backbone.pth"])
def test_round_trip_without_flags(tmp_path, name):
    torch.manual_seed(0)
    net = create_backbone("resnet18", stem="small", width=8)
    for m in net.modules():  # non-trivial BN statistics, so that the buffers are compared too
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            torch.nn.init.normal_(m.weight)
    path = save_backbone(net, tmp_path / name)
    loaded = load_backbone(path)
    assert loaded.conv1.kernel_size == (3, 3) and loaded.conv1.out_channels == 8  # small stem, width 8
    assert isinstance(loaded.maxpool, torch.nn.Identity)
    assert loaded.arch["backbone"] == "resnet18" and loaded.arch["width"] == 8 and loaded.arch["stem"] == "small"
    _same_outputs(net, loaded)


def test_safetensors_metadata_holds_the_architecture(tmp_path):
    save_backbone(create_backbone("resnet18", stem="small-pool", width=4), tmp_path / "b.safetensors")
    with safe_open(str(tmp_path / "b.safetensors"), framework="pt") as f:
        arch = json.loads(f.metadata()[ARCH_KEY])
    assert arch == {"backbone": "resnet18", "stem": "small-pool", "width": 4}


def test_pth_state_dict_loads_into_torchvision_minus_the_head(tmp_path):
    net = create_backbone("resnet18")
    save_backbone(net, tmp_path / "b.pth")
    saved = torch.load(tmp_path / "b.pth", weights_only=True)
    assert saved["config"] == {"backbone": "resnet18", "stem": "standard"}
    target = torchvision.models.resnet18()
    missing, unexpected = target.load_state_dict(saved["state_dict"], strict=False)
    assert sorted(missing) == ["fc.bias", "fc.weight"] and not unexpected


def test_a_barlow_twins_model_saves_its_backbone(tmp_path):
    model = build_model("resnet18", "16-16", stem="small", width=8)
    save_backbone(model, tmp_path / "b.safetensors")
    _same_outputs(model.backbone, load_backbone(tmp_path / "b.safetensors"))


def test_explicit_arch_wins_and_none_needs_flags(tmp_path):
    net = torchvision.models.resnet18()
    net.fc = torch.nn.Identity()  # a plain torchvision module: no recorded architecture
    save_backbone(net, tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError):  # an explicit architecture the tensors do not fit
        load_backbone(tmp_path / "plain.safetensors", backbone="resnet34")
    _same_outputs(net, load_backbone(tmp_path / "plain.safetensors", backbone="resnet18"), 32)
    _same_outputs(net, load_backbone(tmp_path / "plain.safetensors"), 32)  # a torchvision ResNet: known by its keys
    other = torchvision.models.mobilenet_v3_small()
    other.classifier = torch.nn.Identity()
    save_backbone(other, tmp_path / "other.safetensors")
    # read as the default resnet50
    with pytest.raises(CheckpointError, match="pass the matching backbone=, stem= and width= arguments"):
        load_backbone(tmp_path / "other.safetensors")
    save_backbone(net, tmp_path / "named.safetensors", arch={"backbone": "resnet18"})
    _same_outputs(net, load_backbone(tmp_path / "named.safetensors"), 32)


def test_non_finite_weights_are_refused(tmp_path):
    net = create_backbone("resnet18", stem="small", width=4)
    with torch.no_grad():
        net.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        save_backbone(net, tmp_path / "b.safetensors")
    assert not (tmp_path / "b.safetensors").exists()


ARCH = dict(stem="small", width=8)


def test_run_backbone_pth_and_safetensors_hold_the_same_tensors(run_dir):
    pth = torch.load(run_dir / "backbone.pth", weights_only=True)
    from safetensors.torch import load_file

    st = load_file(run_dir / "backbone.safetensors")
    assert pth.keys() == st.keys() and all(torch.equal(pth[k], st[k]) for k in pth)
    src = load_backbone_state(run_dir / "backbone.safetensors")  # no pickle; the architecture from the metadata
    assert src.arch["backbone"] == "resnet18" and src.arch["width"] == 8 and src.arch["stem"] == "small"
    assert not list(run_dir.glob(".*tmp*")), "no temporary files left behind"


def test_non_finite_backbone_is_never_written(tmp_path):
    net = create_backbone("resnet18", **ARCH)
    with torch.no_grad():
        net.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="non-finite"):
        write_run_backbone(net, tmp_path)
    assert not list(tmp_path.iterdir())


def test_save_backbone_records_the_image_size_the_readers_use(tmp_path):
    """A backbone saved from an own loop used to record no input size, so knn and export quietly took 224 px."""
    from barlowtwins.errors import ConfigError
    from barlowtwins.evaluate.backbone import load_eval_backbone

    net = create_backbone("resnet18", stem="small", width=8)
    path = save_backbone(net, tmp_path / "b.safetensors", image_size=64, mean=(0.5, 0.5, 0.5), std=[0.25] * 3)
    src = load_backbone_state(path)
    assert src.arch["image_size"] == 64 and src.arch["mean"] == [0.5, 0.5, 0.5] and src.arch["std"] == [0.25] * 3
    setup = load_eval_backbone(str(path), device="cpu")
    assert setup.image_size == 64 and setup.mean == (0.5, 0.5, 0.5)
    pth = save_backbone(net, tmp_path / "b.pth", image_size=64)
    assert load_backbone_state(pth).arch["image_size"] == 64
    with pytest.raises(ConfigError, match="image_size"):
        save_backbone(net, tmp_path / "c.safetensors", image_size=0)
