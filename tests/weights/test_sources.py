"""Atomic writes, safe loading, and every backbone checkpoint format we read."""

import os

import numpy as np
import pytest
import torch
import torchvision

from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.models.projector import Projector
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.run_files import load_checkpoint
from barlowtwins.weights.save import backbone_state
from barlowtwins.weights.sources import load_backbone_state, load_backbone_weights


class NotATensor:
    pass


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "junk.pth")
    (tmp_path / "bad-pickle.pth").write_bytes(b"\x80\x02e")  # a pickle that fails inside the unpickler
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "bad-pickle.pth")
    torch.save({"x": NotATensor()}, tmp_path / "code.pth")  # arbitrary objects are refused (weights_only)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as e:
        load_checkpoint(tmp_path / "code.pth")
    assert "NotATensor" in str(e.value) and str(e.value).endswith("save a state dict instead")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="holds a list"):
        load_checkpoint(tmp_path / "list.pth")


def test_plain_torchvision_state_dict_with_or_without_head(tmp_path):
    ref = torchvision.models.resnet18()
    full = ref.state_dict()
    torch.save(full, tmp_path / "full.pth")
    torch.save({k: v for k, v in full.items() if not k.startswith("fc.")}, tmp_path / "release.pth")
    for name in ("full.pth", "release.pth"):
        net = create_backbone("resnet18")
        loaded = load_backbone_weights(net, load_backbone_state(tmp_path / name))
        assert len(loaded) == len(net.state_dict())
        assert torch.equal(net.conv1.weight, ref.conv1.weight)


def test_official_full_training_checkpoint(tmp_path):
    backbone = create_backbone("resnet18")
    projector = Projector(512, "64-64")
    model = {f"module.backbone.{k}": v for k, v in backbone.state_dict().items()}
    model.update({f"module.projector.{k}": v for k, v in projector.state_dict().items()})
    model.update({"module.bn.running_mean": torch.zeros(64), "module.bn.running_var": torch.ones(64),
                  "module.bn.num_batches_tracked": torch.tensor(3)})
    torch.save({"epoch": 10, "model": model, "optimizer": {"state": {}, "param_groups": []}}, tmp_path / "ckpt.pth")
    src = load_backbone_state(tmp_path / "ckpt.pth")
    assert "official training checkpoint" in src.origin and len(src.sha256) == 64
    net = create_backbone("resnet18")
    load_backbone_weights(net, src)
    for k, v in backbone.state_dict().items():
        assert torch.equal(net.state_dict()[k], v)


def test_mismatch_names_the_keys(tmp_path):
    save_atomic(backbone_state(create_backbone("resnet18")), tmp_path / "r18.pth")
    save_atomic(backbone_state(create_backbone("resnet50")), tmp_path / "r50.pth")
    with pytest.raises(CheckpointError, match="198 missing.*backbone=, stem= and width="):
        load_backbone_weights(create_backbone("resnet50"), load_backbone_state(tmp_path / "r18.pth"))
    with pytest.raises(CheckpointError, match="unexpected .e.g. layer1.0.conv3.weight"):
        load_backbone_weights(create_backbone("resnet18"), load_backbone_state(tmp_path / "r50.pth"))
    with pytest.raises(CheckpointError, match="other shapes"):
        load_backbone_weights(create_backbone("resnet18", width=32), load_backbone_state(tmp_path / "r18.pth"))


def test_run_folder_without_weights(tmp_path):
    with pytest.raises(CheckpointError, match="neither backbone.pth nor checkpoint.pth"):
        load_backbone_state(tmp_path)
    with pytest.raises(CheckpointError, match="torchvision:<model>:<weights>"):
        load_backbone_state("torchvision:resnet50")


def test_safetensors_source_and_its_errors(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in create_backbone("resnet18").state_dict().items()}
    save_file(state, tmp_path / "b.safetensors")  # without our metadata: the architecture is read off the tensors
    src = load_backbone_state(tmp_path / "b.safetensors")
    assert src.arch == {"stem": "standard", "backbone": "resnet18"}
    assert src.arch_from == {"stem": "tensors", "backbone": "tensors"}
    assert src.state.keys() == state.keys() and src.sha256
    assert all(torch.equal(src.state[k], v) for k, v in state.items())
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_backbone_state(tmp_path / "bad.safetensors")


def test_torchvision_weights_name_is_checked_before_any_download():
    with pytest.raises(CheckpointError, match="no weights 'NOPE' for resnet18; choose one of DEFAULT, IMAGENET1K_V1"):
        load_backbone_state("torchvision:resnet18:NOPE")


def test_a_file_that_is_no_weights_file_is_named_so_without_suggesting_unsafe_loading(tmp_path):
    def error(data: bytes, name: str = "x.pth") -> str:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(tmp_path / name)
        text = str(e.value)
        assert "\n" not in text and "weights_only" not in text.lower().replace(" ", "_") and str(tmp_path) in text
        return text

    text = error(b"garbage, not a checkpoint")
    assert "is not a PyTorch/safetensors weights file (it starts with b'garbage,'" in text
    assert "not a readable PyTorch checkpoint" in text and "pass a run folder" in text
    assert "it is empty" in error(b"")
    # A pickle (what torch.save writes) damaged inside: the unpickler's own reason, not PyTorch's advice.
    text = error(b"\x80\x02\xed" + b"x" * 20)
    assert "Unsupported operand 237" in text and "damaged" in text
    rng = np.random.default_rng(0)
    for _ in range(30):  # random bytes, some of them starting like a pickle or a zip archive
        head = [b"", b"\x80\x02", b"\x80\x04\x95", b"PK\x03\x04"][int(rng.integers(4))]
        error(head + rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8).tobytes())
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "st.pth")
    assert "is a safetensors file: name it .safetensors" in error((tmp_path / "st.pth").read_bytes())
