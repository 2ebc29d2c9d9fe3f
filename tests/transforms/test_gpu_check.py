"""benchmarks/gpu_check.sh and its Python part: a clean exit without CUDA, and the pieces the rehearsal stands on
(the dispatch-mode sync audit, the crop adapter, the isolation of a check, the summary)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import gpu_check  # benchmarks/ is on the path (conftest)
import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable, "RESULTS_DIR": str(tmp_path / "res")}
    for cmd in (["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
                [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--output", str(tmp_path / "r.json")]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip().splitlines() == [gpu_check.NO_CUDA]
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "res").exists()


def test_the_script_refuses_an_unknown_argument_in_one_line():
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--rehearsal"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "--rehearse" in r.stderr


@pytest.mark.parametrize("op,message", [
    (lambda x: x.sum().item(), "_local_scalar_dense reads device data"),
    (lambda x: x.nonzero(), "nonzero reads device data"),
    (lambda x: x[x > 0], "index reads device data"),
    (lambda x: x.repeat_interleave(torch.tensor([1, 2, 1], device=x.device), dim=0), "repeat_interleave"),
    (lambda x: x.to("cpu"), "copies device data to the host"),
])
def test_the_sync_audit_refuses_what_would_wait_for_a_gpu(op, message):
    x = torch.empty(3, 4, device="meta")
    with pytest.raises(gpu_check.HostSync, match=message):
        with gpu_check.HostSyncAudit():
            op(x)


def test_the_sync_audit_lets_host_work_and_device_kernels_through_and_counts_uploads():
    audit = gpu_check.HostSyncAudit()
    with audit:
        mask = torch.tensor([True, False, True])
        idx = mask.nonzero().squeeze(1)  # host data: fine
        assert idx.tolist() == [0, 2] and bool(mask.any())
        x = torch.empty(3, 4, device="meta")
        y = x.index_select(0, idx.to("meta")).clamp(0, 1) * 2  # device kernels, one upload
        y = y.repeat_interleave(3, dim=0)  # by an int: no sync
    assert y.shape == (6, 4) and audit.host_to_device == 1


def test_the_crop_adapter_gives_both_crops_equal_to_the_float64_reference(monkeypatch):
    """Grouped and per-sample crops against a float64 antialiased resize; a `crop_resize` without the
    ``grouped`` keyword is called through its default and the call says so."""
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (3, 30 + 3 * i, 40), dtype=torch.uint8, generator=g) for i in range(4)]
    boxes = torch.tensor([[0, 0, 30, 40], [2, 5, 20, 30], [3, 1, 33, 17], [0, 10, 12, 12]], dtype=torch.float64)
    ref = torch.stack([F.interpolate(img[None, :, t: t + h, l: l + w].double() / 255, size=(16, 16), mode="bicubic",
                                     antialias=True, align_corners=False)[0].clamp(0, 1)
                       for img, (t, l, h, w) in zip(images, boxes.int().tolist())])
    for grouped, call in ((True, "crop_resize(grouped=True)"), (False, "crop_resize_each")):
        out, made_by = gpu_check.crop_both_ways(images, boxes, 16, grouped)
        assert made_by == call and out.shape == (4, 3, 16, 16)
        torch.testing.assert_close(out.double(), ref, rtol=0, atol=2e-5)
    seen = []
    monkeypatch.setattr(gpu_check, "crop_resize", lambda images, boxes, size, mode="bicubic": seen.append(size) or 1)
    assert gpu_check.crop_both_ways(images, boxes, 16, True) == (1, "crop_resize default on cpu") and seen == [16]


def test_a_failing_check_keeps_its_figures_and_an_injected_one_fails(monkeypatch):
    ctx = gpu_check.Ctx(torch.device("cpu"), gpu_check.REHEARSAL, True)

    def found(ctx):
        raise gpu_check.CheckFailed("2 corrupt images", {"differ_from_pil": {"x": 2}})

    monkeypatch.setitem(gpu_check.CHECKS, "corruption", found)
    s = gpu_check.run_one("corruption", ctx, set())
    assert s["status"] == "failed" and s["error"] == "2 corrupt images" and s["differ_from_pil"] == {"x": 2}
    s = gpu_check.run_one("self_test", ctx, {"self_test"})
    assert s["status"] == "failed" and "injected by GPU_CHECK_FAIL=self_test" in s["error"]
    assert gpu_check.run_one("self_test", ctx, set())["status"] == "ok"
    with pytest.raises(ValueError, match="unknown checks \\['nope'\\]"):
        gpu_check.injected_failures("sync_audit, nope")
    assert gpu_check.injected_failures(" sync_audit,odd_files ") == {"sync_audit", "odd_files"}


def test_the_check_limits_fit_the_scripts_time_for_them():
    text = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    assert set(gpu_check.LIMITS) == set(gpu_check.CHECKS) and "CHECKS_LIMIT=230 BENCH_LIMIT=200" in text
    assert sum(gpu_check.LIMITS.values()) <= 230 - 10  # CUDA start-up and imports inside the step's limit


def test_the_summary_names_each_step_and_marks_the_results(tmp_path, capsys):
    (tmp_path / "gpu-check-bench.json").write_text(json.dumps({"model_only": {"mfu": 0.4}}))
    (tmp_path / "gpu-check.json").write_text("{not json")  # a file cut off by a kill is left as it is
    assert gpu_check.summary(tmp_path, ["checks=0", "bench=124"], rehearsal=True) == 1
    s = json.loads((tmp_path / "gpu-check-summary.json").read_text())
    assert s["steps"] == {"checks": {"exit_status": 0, "status": "ok"},
                          "bench": {"exit_status": 124, "status": "timed out"}}
    assert s["failed"] == ["bench"] and s["rehearsal"] is True and s["files"]["gpu-check-bench.json"] is True
    assert s["files"]["gpu-check.log"] is False
    assert json.loads((tmp_path / "gpu-check-bench.json").read_text()) == {"rehearsal": True,
                                                                          "model_only": {"mfu": 0.4}}
    assert (tmp_path / "gpu-check.json").read_text() == "{not json"
    assert "failed steps: bench" in capsys.readouterr().out
    assert gpu_check.summary(tmp_path, ["checks=0"], rehearsal=True) == 0
    assert np.isclose(json.loads((tmp_path / "gpu-check-bench.json").read_text())["model_only"]["mfu"], 0.4)
