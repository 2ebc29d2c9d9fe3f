"""The architecture a source records is checked (types, bounds, its own tensors) before any network is built."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import random_images, reference_backbone, trained_backbone
from torch import nn

from barlowtwins.cli import main
from barlowtwins.errors import CheckpointError
from barlowtwins.models import backbones
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.load import load_backbone
from barlowtwins.weights.save import backbone_state, save_safetensors_atomic
from barlowtwins.weights.sources import load_backbone_state


@pytest.fixture
def no_wide_network(monkeypatch):
    """Fails the test if a ResNet of another width than torchvision's is built for real (not on the meta device),
    so a check that comes too late shows as this failure instead of a 20 GB allocation."""
    original = backbones._WidthResNet.__init__

    def guarded(self, block, layers, width, **kw):
        if width > 64 and torch.empty(0).device.type != "meta":
            raise AssertionError(f"a width-{width} network was built before the file was checked")
        original(self, block, layers, width, **kw)
    monkeypatch.setattr(backbones._WidthResNet, "__init__", guarded)


def _one_line_exit_2(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("width,message", [(20000, "at most 1024"),
                                           (512, "says width 512, but .* holds tensors of width 8")])
def test_safetensors_metadata_claiming_another_width_is_refused_before_building(tmp_path, capsys, no_wide_network,
                                                                                width, message):
    path = tmp_path / "backbone.safetensors"
    state = backbone_state(trained_backbone("resnet18", stem="small", width=8))
    save_safetensors_atomic(state, path, {"backbone": "resnet18", "stem": "small", "width": width})
    for load in (load_backbone, load_backbone_state):  # load_backbone_state: what embed, knn and linear read
        with pytest.raises(CheckpointError, match=message) as e:
            load(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    err = _one_line_exit_2(["export", "--checkpoint", str(path), "--format", "onnx", "--output",
                            str(tmp_path / "b.onnx")], capsys)
    assert "backbone.safetensors" in err and not (tmp_path / "b.onnx").exists()


def test_run_config_claiming_another_width_or_stem_is_refused(run_dir, tmp_path, capsys, no_wide_network):
    config = run_dir / "config.yaml"
    text = config.read_text()
    (run_dir / "backbone.safetensors").unlink()  # backbone.pth holds no architecture: config.yaml says it
    config.write_text(text.replace("width: 8", "width: 20000"))
    with pytest.raises(CheckpointError, match=r"config.yaml says width 20000: at most 1024"):
        load_backbone_state(run_dir)
    config.write_text(text.replace("width: 8", "width: 600"))
    with pytest.raises(CheckpointError, match=r"config.yaml says width 600, but .*backbone.pth.* holds tensors of "
                                              r"width 8 \(conv1.weight \(8, 3, 3, 3\)\)"):
        load_backbone(run_dir)
    config.write_text(text.replace("stem: small", "stem: standard"))
    with pytest.raises(CheckpointError, match=r"says stem standard \(a 7x7 conv1\), but .* holds a 3x3 conv1"):
        load_backbone_state(run_dir)
    config.write_text(text)
    assert load_backbone(run_dir).conv1.out_channels == 8


def test_run_config_naming_another_backbone_is_refused_before_building(run_dir):
    (run_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text().replace("resnet18", "resnet152"))
    with pytest.raises(CheckpointError, match=r"does not match resnet152 .*config.yaml.*missing") as e:
        load_backbone_state(run_dir)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("arch", [dict(stem="small", width=8), dict(stem="standard", width=16),
                                  dict(stem="standard")])
def test_width_and_stem_are_read_off_the_tensors_when_the_file_does_not_say(tmp_path, arch):
    ref = trained_backbone("resnet18", **arch)
    save_atomic(backbone_state(ref), tmp_path / "narrow.pth")  # a plain state dict: no architecture recorded
    net = load_backbone(tmp_path / "narrow.pth", backbone="resnet18")
    assert net.arch["stem"] == arch["stem"] and net.arch.get("width") == arch.get("width")
    with torch.no_grad():
        torch.testing.assert_close(net(random_images(2, 32)), ref(random_images(2, 32)), rtol=0, atol=0)


@pytest.mark.parametrize("name,arch", [("resnet18", dict(stem="small", width=8)), ("resnet50", dict(width=8)),
                                       ("resnext50_32x4d", dict(width=16, stem="small"))])
def test_a_torchvision_resnet_is_recognised_by_its_keys_when_nothing_names_it(tmp_path, name, arch):
    ref = trained_backbone(name, **arch)
    save_atomic(backbone_state(ref), tmp_path / "plain.pth")
    net = load_backbone(tmp_path / "plain.pth")  # no flags at all
    assert net.arch["backbone"] == name and net.arch["width"] == arch["width"]
    with torch.no_grad():
        torch.testing.assert_close(net(random_images(2, 32)), ref(random_images(2, 32)), rtol=0, atol=0)


@pytest.mark.parametrize("field,value", [("width", '"abc"'), ("width", "true"), ("width", "8.5"),
                                         ("image_size", "[1, 2]"), ("image_size", "0"), ("image_size", "100000"),
                                         ("mean", '"x"'), ("mean", "[0.5, 0.5]"), ("std", "[0.2, 0.0, 0.2]"),
                                         ("stem", "5"), ("stem", "tiny"), ("backbone", "[resnet18]"),
                                         ("dataset", "{a: 1}")])
def test_wrong_types_in_a_run_config_are_one_line(run_dir, field, value):
    config = run_dir / "config.yaml"
    lines = [ln for ln in config.read_text().splitlines() if not ln.startswith(f"{field}:")]
    config.write_text("\n".join([*lines, f"{field}: {value}"]) + "\n")
    with pytest.raises(CheckpointError, match=f"config.yaml says {field} .*; correct or delete") as e:
        load_backbone_state(run_dir)
    assert "\n" not in str(e.value)


def test_wrong_types_in_a_run_config_exit_2_for_export_and_embed(run_dir, image_tree, tmp_path, capsys):
    config = run_dir / "config.yaml"
    config.write_text(config.read_text().replace("width: 8", 'width: "abc"'))
    err = _one_line_exit_2(["export", "--checkpoint", str(run_dir), "--format", "pth", "--output",
                            str(tmp_path / "b.pth")], capsys)
    assert "width" in err and "abc" in err
    config.write_text(config.read_text().replace('width: "abc"', "width: 8").replace("image_size: 16",
                                                                                     "image_size: [1, 2]"))
    err = _one_line_exit_2(["embed", "--checkpoint", str(run_dir), "--dataset", "images", "--data-dir",
                            str(image_tree / "val"), "--output", str(tmp_path / "emb.npy")], capsys)
    assert "image_size" in err


def test_safetensors_metadata_of_wrong_types_is_one_line(tmp_path):
    from safetensors.torch import save_file

    state = backbone_state(trained_backbone("resnet18", stem="small", width=8))
    save_file(state, tmp_path / "b.safetensors", metadata={"barlowtwins.arch": json.dumps({"width": [8]})})
    with pytest.raises(CheckpointError, match=r"b.safetensors's metadata says width \[8\]"):
        load_backbone_state(tmp_path / "b.safetensors")


def test_export_refuses_a_state_dict_that_is_not_the_named_backbone(run_dir, tmp_path, capsys):
    save_atomic(nn.Linear(4, 2).state_dict(), tmp_path / "linear.pth")
    for extra in ([], ["--backbone", "resnet18"]):
        err = _one_line_exit_2(["export", "--checkpoint", str(tmp_path / "linear.pth"), "--format", "pth",
                                "--output", str(tmp_path / "out.pth"), *extra], capsys)
        assert "linear.pth" in err and "does not match" in err and "unexpected (e.g. weight, bias)" in err
        assert not (tmp_path / "out.pth").exists()
    state = reference_backbone(run_dir).state_dict()
    save_atomic({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    err = _one_line_exit_2(["export", "--checkpoint", str(tmp_path / "extra.pth"), "--backbone", "resnet18",
                            "--output", str(tmp_path / "out.pth")], capsys)
    assert "1 unexpected (e.g. extra.weight)" in err
    head = nn.Linear(64 * 8, 10).state_dict()  # a classifier head is left out, not refused
    save_atomic({**state, **{f"fc.{k}": v for k, v in head.items()}}, tmp_path / "with_fc.pth")
    assert main(["export", "--checkpoint", str(tmp_path / "with_fc.pth"), "--backbone", "resnet18",
                 "--output", str(tmp_path / "out.pth")]) == 0
    assert load_backbone(tmp_path / "out.pth", backbone="resnet18").conv1.kernel_size == (3, 3)


def test_export_records_the_architecture_read_off_the_tensors(tmp_path):
    ref = trained_backbone("resnet18", stem="small", width=8)
    save_atomic(backbone_state(ref), tmp_path / "plain.pth")
    assert main(["export", "--checkpoint", str(tmp_path / "plain.pth"), "--backbone", "resnet18", "--format",
                 "safetensors", "--output", str(tmp_path / "b.safetensors")]) == 0
    net = load_backbone(tmp_path / "b.safetensors")  # no flags: the export recorded what the tensors say
    assert net.arch["width"] == 8 and net.arch["stem"] == "small" and net.arch["backbone"] == "resnet18"


def test_export_image_size_is_bounded(run_dir, tmp_path, capsys):
    err = _one_line_exit_2(["export", "--checkpoint", str(run_dir), "--format", "torchscript", "--image-size",
                            "100000", "--output", str(tmp_path / "b.pt")], capsys)
    assert "at most 4096" in err
