"""Exports: every format round-trips to the same outputs; load_backbone and torch.hub read every source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import random_images, reference_backbone

from barlowtwins import load_backbone
from barlowtwins.cli import main
from barlowtwins.errors import ConfigError
from barlowtwins.weights.formats import EXPORT_FORMATS, ExportFormat, export_backbone_file, register_export_format

REPO = Path(__file__).resolve().parents[2]
ARCH = dict(stem="small", width=8)






def _export(run_dir, fmt, out) -> str:
    assert main(["export", "--checkpoint", str(run_dir), "--format", fmt, "--output", str(out)]) == 0
    assert out.is_file()
    return out


def test_export_pth_and_safetensors_round_trip(run_dir, tmp_path, capsys):
    ref = reference_backbone(run_dir)
    for fmt, name in (("pth", "b.pth"), ("safetensors", "b.safetensors")):
        net = load_backbone(_export(run_dir, fmt, tmp_path / name), backbone="resnet18", **ARCH)
        with torch.no_grad():
            torch.testing.assert_close(net(random_images()), ref(random_images()), rtol=0, atol=0)
    assert "safetensors" in capsys.readouterr().out


def test_export_torchscript_round_trip(run_dir, tmp_path):
    ts = torch.jit.load(str(_export(run_dir, "torchscript", tmp_path / "b.pt")))
    ref = reference_backbone(run_dir)
    with torch.no_grad():
        for n in (1, 5):  # traced at batch 2: other batch sizes work too
            torch.testing.assert_close(ts(random_images(n)), ref(random_images(n)), rtol=1e-5, atol=1e-5)


def test_export_onnx_round_trip_with_a_dynamic_batch(run_dir, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    path = _export(run_dir, "onnx", tmp_path / "b.onnx")
    assert "onnxruntime matches PyTorch" in capsys.readouterr().out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ref = reference_backbone(run_dir)
    for n in (1, 4):
        got = session.run(None, {"images": random_images(n).numpy()})[0]
        with torch.no_grad():
            torch.testing.assert_close(torch.from_numpy(got), ref(random_images(n)), rtol=1e-4, atol=1e-4)


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
    x = random_images(2, 32)
    with torch.no_grad():
        want = net(x)
        ts = torch.jit.load(str(_export(out, "torchscript", tmp_path / "t.pt")))
        torch.testing.assert_close(ts(x), want, rtol=1e-5, atol=1e-5)
        st = load_backbone(_export(out, "safetensors", tmp_path / "t.safetensors"))  # arch from the metadata
        torch.testing.assert_close(st(x), want, rtol=0, atol=0)


def test_a_registered_export_format_is_written_by_the_library(run_dir, tmp_path):
    def write_shapes(job) -> str:
        job.output.write_text("".join(f"{k} {list(v.shape)}\n" for k, v in sorted(job.src.state.items())))
        return f"shapes at {job.image_size} px"

    saved = dict(EXPORT_FORMATS)
    try:
        register_export_format(ExportFormat("shapes", write_shapes, ".txt", "tensor shapes"))
        src, how = export_backbone_file(run_dir, "shapes", tmp_path / "shapes.txt")
    finally:
        EXPORT_FORMATS.clear()
        EXPORT_FORMATS.update(saved)
    assert how == "shapes at 16 px"  # the run's image size, from its config
    lines = (tmp_path / "shapes.txt").read_text().splitlines()
    assert lines == [f"{k} {list(v.shape)}" for k, v in sorted(src.state.items())] and len(lines) > 10
    with pytest.raises(ConfigError, match="unknown export format 'shapes'; choose one of pth, safetensors"):
        export_backbone_file(run_dir, "shapes", tmp_path / "again.txt")


def test_an_unknown_export_format_suggests_the_closest(run_dir, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown export format 'onxx' \(did you mean onnx\?\)"):
        export_backbone_file(run_dir, "onxx", tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()
    assert all(f.suffix.startswith(".") and f.description for f in EXPORT_FORMATS.values())
