"""Exports: every format round-trips to the same outputs; load_backbone and torch.hub read every source."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
import torchvision

from barlowtwins import load_backbone
from barlowtwins.cli import main
from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.detectron2 import detectron2_to_torchvision, read_detectron2, torchvision_to_detectron2
from barlowtwins.weights.save import write_run_backbone
from barlowtwins.weights.sources import load_backbone_state

REPO = Path(__file__).resolve().parents[2]
ARCH = dict(stem="small", width=8)


def _trained_like(name="resnet18", **arch) -> torch.nn.Module:
    """A backbone with non-trivial weights and BN statistics (so a wrong key or a skipped buffer shows)."""
    torch.manual_seed(0)
    net = create_backbone(name, **arch)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                v.copy_(v + 0.05 * torch.randn_like(v))
                if k.endswith("running_var"):
                    v.abs_().add_(0.5)
    return net.eval()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder as the trainer leaves it: config.yaml, backbone.pth and backbone.safetensors."""
    net = _trained_like(**ARCH)
    cfg = {"backbone": "resnet18", "stem": "small", "width": 8, "image_size": 16, "dataset": "images"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    write_run_backbone(net, tmp_path / "run", cfg)
    return tmp_path / "run"


def _x(n=3, size=16):
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def _reference(run_dir) -> torch.nn.Module:
    net = create_backbone("resnet18", **ARCH)
    net.load_state_dict(torch.load(run_dir / "backbone.pth", weights_only=True))
    return net.eval()


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


@pytest.mark.parametrize("source", ["folder", "backbone.pth", "backbone.safetensors", "checkpoint.pth", "official"])
def test_load_backbone_reads_every_source(run_dir, tmp_path, source):
    ref = _reference(run_dir)
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
        torch.testing.assert_close(net(_x()), ref(_x()), rtol=0, atol=0)


def test_load_backbone_with_a_new_head(run_dir):
    net = load_backbone(run_dir, num_classes=7)
    assert isinstance(net.fc, torch.nn.Linear) and net.fc.out_features == 7 and net(_x()).shape == (3, 7)


def _export(run_dir, fmt, out) -> str:
    assert main(["export", "--checkpoint", str(run_dir), "--format", fmt, "--output", str(out)]) == 0
    assert out.is_file()
    return out


def test_export_pth_and_safetensors_round_trip(run_dir, tmp_path, capsys):
    ref = _reference(run_dir)
    for fmt, name in (("pth", "b.pth"), ("safetensors", "b.safetensors")):
        net = load_backbone(_export(run_dir, fmt, tmp_path / name), backbone="resnet18", **ARCH)
        with torch.no_grad():
            torch.testing.assert_close(net(_x()), ref(_x()), rtol=0, atol=0)
    assert "safetensors" in capsys.readouterr().out


def test_export_torchscript_round_trip(run_dir, tmp_path):
    ts = torch.jit.load(str(_export(run_dir, "torchscript", tmp_path / "b.pt")))
    ref = _reference(run_dir)
    with torch.no_grad():
        for n in (1, 5):  # traced at batch 2: other batch sizes work too
            torch.testing.assert_close(ts(_x(n)), ref(_x(n)), rtol=1e-5, atol=1e-5)


def test_export_onnx_round_trip_with_a_dynamic_batch(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    path = _export(run_dir, "onnx", tmp_path / "b.onnx")
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = _reference(run_dir)
    for n in (1, 4):
        got = session.run(None, {"images": _x(n).numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), ref(_x(n)), rtol=1e-4, atol=1e-4)


def test_detectron2_layout(tmp_path):
    net = _trained_like("resnet50", width=8)  # bottleneck blocks (conv3, shortcut) at a CPU-test size
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
        torch.testing.assert_close(restored(_x(2, 64)), net(_x(2, 64)), rtol=0, atol=0)


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


def test_torch_hub_load_local(run_dir):
    ref = _reference(run_dir)
    net = torch.hub.load(str(REPO), "resnet18", source="local", weights=str(run_dir / "backbone.pth"), **ARCH)
    assert isinstance(net, torchvision.models.ResNet) and isinstance(net.fc, torch.nn.Identity)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(_x()), ref(_x()), rtol=0, atol=0)
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    assert all(callable(getattr(hub, n)) for n in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152"))
    plain = torch.hub.load(str(REPO), "resnet50", source="local", num_classes=1000)
    assert plain.fc.out_features == 1000  # no weights: torchvision's random init, with a head when asked


def test_timm_backbone_pretrains_evaluates_and_exports(image_tree, tmp_path, capsys):
    pytest.importorskip("timm")
    out = tmp_path / "run"
    assert main(["pretrain", "--dataset", "images", "--data-dir", str(image_tree / "train"), "--backbone",
                 "timm:test_resnet", "--image-size", "32", "--projector", "32-32", "--epochs", "1",
                 "--batch-size", "4", "--warmup-epochs", "0", "--out", str(out), "--no-progress",
                 "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "pretrained 3 steps" in printed and "barlowtwins.load_backbone(" in printed
    net = load_backbone(out)
    assert type(net).__module__.startswith("timm") and net.arch["backbone"] == "timm:test_resnet"
    assert main(["knn", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--k", "3", "--workers", "0"]) == 0
    x = _x(2, 32)
    with torch.no_grad():
        want = net(x)
        ts = torch.jit.load(str(_export(out, "torchscript", tmp_path / "t.pt")))
        torch.testing.assert_close(ts(x), want, rtol=1e-5, atol=1e-5)
        st = load_backbone(_export(out, "safetensors", tmp_path / "t.safetensors"))  # arch from the metadata
        torch.testing.assert_close(st(x), want, rtol=0, atol=0)
