"""detectron2's key layout both ways, its reader refusing code, and the export refusing a small stem."""

from __future__ import annotations

import pickle

import pytest
import torch
from conftest import random_images, trained_backbone

from barlowtwins.cli import main
from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.detectron2 import detectron2_to_torchvision, read_detectron2, torchvision_to_detectron2


def test_detectron2_layout(tmp_path):
    net = trained_backbone("resnet50", width=8)  # bottleneck blocks (conv3, shortcut) at a CPU-test size
    state = net.state_dict()
    d2 = torchvision_to_detectron2(state)
    # detectron2's names (tools/convert-torchvision-to-d2.py)
    for key in ("stem.conv1.weight", "stem.conv1.norm.weight", "stem.conv1.norm.running_var",
                "res2.0.conv1.weight", "res2.0.conv3.norm.bias", "res2.0.shortcut.weight",
                "res2.0.shortcut.norm.running_mean", "res5.2.conv2.norm.weight"):
        assert key in d2, key
    assert not any("layer" in k or "bn" in k or "downsample" in k for k in d2)
    assert detectron2_to_torchvision(d2).keys() == state.keys()

    save_atomic(state, tmp_path / "r50.pth")
    out = tmp_path / "r50.pkl"
    assert main(["export", "--checkpoint", str(tmp_path / "r50.pth"), "--format", "detectron2",
                 "--output", str(out)]) == 0
    with open(out, "rb") as f:  # written as detectron2's tool writes it; this test file is our own
        raw = pickle.load(f)
    assert raw["matching_heuristics"] is True and raw["__author__"] and "res4.5.conv3.weight" in raw["model"]
    back = read_detectron2(out)  # numpy-only unpickler
    restored = create_backbone("resnet50", width=8).eval()
    restored.load_state_dict(back)
    with torch.no_grad():
        torch.testing.assert_close(restored(random_images(2, 64)), net(random_images(2, 64)), rtol=0, atol=0)


def test_detectron2_reader_refuses_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"model": {"stem.conv1.weight": Evil()}}))
    with pytest.raises(CheckpointError, match="not allowed"):
        read_detectron2(path)


def test_detectron2_refuses_a_small_stem(run_dir, tmp_path, capsys):
    assert main(["export", "--checkpoint", str(run_dir), "--format", "detectron2", "--output",
                 str(tmp_path / "x.pkl")]) == 2
    assert "7x7" in capsys.readouterr().err and not (tmp_path / "x.pkl").exists()
