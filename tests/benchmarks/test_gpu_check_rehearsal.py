"""`bash benchmarks/gpu_check.sh --rehearse` on this CPU host: every step of the GPU check at toy sizes, every
result file written with every section, and a failing check costing only its own figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHECKS = ["self_test", "corruption", "sync_audit", "odd_files", "device_vs_cpu", "crop_speed"]
FILES = ["gpu-check.json", "gpu-check-bench.json", "gpu-check-bench.md", "gpu-check-summary.json", "gpu-check.log"]
MEASUREMENTS = ["model only", "data path cpu", "end to end cpu", "data path device", "end to end device",
                "official PIL pipeline"]


def rehearse(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, Path]:
    """Run the rehearsal into tmp_path/results, its files copied to tmp_path/out (the device tool's OUT)."""
    out = tmp_path / "out"
    full = {k: v for k, v in os.environ.items() if k != "GPU_CHECK_FAIL"}  # only what the test injects
    full.update(PYTHON=sys.executable, OUT=str(out), RESULTS_DIR=str(tmp_path / "results"),
                JPEGS=str(tmp_path / "jpegs"), **env)
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--rehearse"], env=full,
                       capture_output=True, text=True, timeout=300, check=False)
    return r, out


def load(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


def check_bench(bench: dict) -> None:
    """Every figure of the bench there: model only with FLOPs, both paths alone and end to end, the official
    pipeline, the ratios (end to end / model only, device / cpu / official), no error, nothing pending."""
    assert bench["rehearsal"] is True and bench["errors"] == {} and bench["pending"] == []
    assert bench["environment"]["device_type"] == "cpu" and bench["spec"]["device"] == "cpu"
    m = bench["model_only"]
    assert m["samples_per_sec"] > 0 and m["gflop_per_sample"] > 0 and m["tflops"] > 0 and "mfu" in m
    assert bench["paths"] == ["cpu", "device"]
    assert set(bench["data_only"]) == set(bench["end_to_end"]) == {"cpu", "device"}
    assert all(v > 0 for v in [*bench["data_only"].values(), *bench["end_to_end"].values(), bench["official_pil"]])
    assert set(bench["ratios"]) == {"end to end cpu / model only", "end to end device / model only",
                                    "data path cpu / official PIL", "data path device / official PIL",
                                    "data path device / data path cpu"}
    assert {k: len(v) for k, v in bench["runs"].items()} == dict.fromkeys(MEASUREMENTS, 1)


def test_the_rehearsal_writes_every_section_of_every_result_file(tmp_path):
    r, out = rehearse(tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    checks = load(out, "gpu-check.json")
    assert checks["rehearsal"] is True and checks["complete"] is True and list(checks["checks"]) == CHECKS
    for name, section in checks["checks"].items():
        assert section["status"] == "ok" and "error" not in section, (name, section)
    c = checks["checks"]
    assert c["self_test"]["decoder"] == "ok"
    assert c["corruption"]["differ_from_pil"] == {"torchvision on the training stream": 0,
                                                  "barlowtwins decode_jpegs": 0}
    assert c["sync_audit"]["audited_steps"] == 4 and c["sync_audit"]["warmup_steps"] == 1
    assert c["sync_audit"]["mode"].startswith("HostSyncAudit")
    assert {"cmyk.jpg", "progressive.jpg", "truncated.jpg", "big-under-cap.jpg", "huge-over-cap.jpg",
            "good.jpg"} == {k for k in c["odd_files"] if k.endswith(".jpg")}
    assert c["odd_files"]["truncated.jpg"]["replaced"] and not c["odd_files"]["good.jpg"]["replaced"]
    assert not c["odd_files"]["cmyk.jpg"]["device_decoded"] and c["odd_files"]["progressive.jpg"]["device_decoded"]
    assert 0 <= c["device_vs_cpu"]["max_diff_levels"] <= c["device_vs_cpu"]["limit_levels"]
    rows = [c["crop_speed"][k] for k in ("one shape", "all shapes differ")]
    assert all(row["grouped_ms"] > 0 and row["per_sample_ms"] > 0 for row in rows)
    check_bench(load(out, "gpu-check-bench.json"))
    rows = [ln for ln in (out / "gpu-check-bench.md").read_text().splitlines() if ln.startswith("| 20")]
    assert len(rows) == 1 and "failed" not in rows[0] and "not run" not in rows[0]
    summary = load(out, "gpu-check-summary.json")
    assert summary["rehearsal"] is True and summary["failed"] == [] and all(summary["files"].values())
    assert {k: v["status"] for k, v in summary["steps"].items()} == {"checks": "ok", "bench": "ok"}
    log = (out / "gpu-check.log").read_text()
    assert "== checks: exit status 0 ==" in log and "ratio device / cpu" in log
    assert log.rstrip().endswith("gpu_check: exit status 0")  # the log copied whole, after the last line


@pytest.mark.parametrize("check", ["sync_audit"])
def test_a_failing_check_leaves_every_other_figure_and_fails_the_script(tmp_path, check):
    r, out = rehearse(tmp_path, GPU_CHECK_FAIL=check)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    checks = load(out, "gpu-check.json")
    assert checks["complete"] is True
    failed = checks["checks"][check]
    assert failed["status"] == "failed" and f"injected by GPU_CHECK_FAIL={check}" in failed["error"]
    for name, section in checks["checks"].items():
        if name != check:
            assert section["status"] == "ok" and "error" not in section, (name, section)
    check_bench(load(out, "gpu-check-bench.json"))
    summary = load(out, "gpu-check-summary.json")
    assert summary["failed"] == ["checks"] and summary["steps"]["bench"]["status"] == "ok"
    assert all(summary["files"].values())
    assert f"{check}: FAILED" in (out / "gpu-check.log").read_text()
