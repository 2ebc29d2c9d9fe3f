"""benchmarks/gpu_protocol.sh survives its own failures: each part under its own time limit, every part run,
the failed ones named, exit status 1; its limits fit one 10-minute command. Run with a stand-in for Python that
fails, hangs or passes per part (nothing is trained)."""

import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STUB = """#!/usr/bin/env bash
echo "stub $*" >> "$CALLS"
case "$*" in *fashion_mnist.py*) exit 3;; *resnet50*) sleep 30;; esac
exit 0
"""


def run(tmp_path, data: Path, **env):
    stub = tmp_path / "python"
    stub.write_text(STUB)
    stub.chmod(0o755)
    calls = tmp_path / "calls"
    full = {**os.environ, "PYTHON": str(stub), "CALLS": str(calls), "DATA": str(data), "LOG": str(tmp_path / "log"),
            "OUT": str(tmp_path / "out"), "PATH": os.environ["PATH"], **env}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_protocol.sh")], env=full, capture_output=True,
                       text=True, timeout=120, check=False)
    return r, calls.read_text().splitlines()


def test_every_part_runs_and_the_failed_ones_are_named(tmp_path):
    data = tmp_path / "fmnist"
    data.mkdir()
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz"):
        (data / name).write_bytes(b"")
    r, calls = run(tmp_path, data, PAPER_LIMIT="2")
    assert r.returncode == 1, r.stdout + r.stderr
    assert [c.split()[1] for c in calls[1:]] == ["benchmarks/ddp_step_time.py", "benchmarks/ddp_step_time.py",
                                                 "benchmarks/fashion_mnist.py"]
    assert "--data-dir " + str(data) in calls[3]
    table = {ln.split()[0]: ln.split(maxsplit=1)[1] for ln in r.stdout.splitlines()
             if ln.startswith(("steps-small ", "steps-paper ", "protocol "))}
    assert table == {"steps-small": "ok         0", "steps-paper": "timed out  124", "protocol": "failed     3"}
    assert r.stdout.rstrip().endswith("gpu_protocol: failed: steps-paper,protocol")
    log = (tmp_path / "out" / "log").read_text()
    assert log.rstrip().endswith("gpu_protocol: failed: steps-paper,protocol")


def test_missing_data_is_a_failed_part_that_says_how_to_carry_it(tmp_path):
    r, calls = run(tmp_path, tmp_path / "nowhere", PAPER_LIMIT="1")
    assert r.returncode == 1 and not any("fashion_mnist.py" in c for c in calls)
    assert "protocol: no Fashion-MNIST IDX files in" in r.stdout and "protocol     no data" in r.stdout
    top = (ROOT / "benchmarks" / "gpu_protocol.sh").read_text()
    assert "mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/* data/fashion-mnist/" in top
    assert 'carry=["data/fashion-mnist"]' in top


def test_the_limits_fit_one_ten_minute_command(tmp_path):
    r, _ = run(tmp_path, tmp_path / "nowhere", PAPER_LIMIT="1")
    limits = re.search(r"time limits (\d+) \+ (\d+) \+ (\d+) = (\d+) s", r.stdout)
    small, paper, protocol, total = (int(v) for v in limits.groups())
    assert (small, paper, protocol) == (50, 1, 5 * 60 + 100) and total == small + paper + protocol
    assert small + 80 + protocol <= 540 and "PAPER_LIMIT=${PAPER_LIMIT:-80}" in (
        ROOT / "benchmarks" / "gpu_protocol.sh").read_text()  # the default parts: under 9 minutes
    assert "warning" not in r.stdout
    r, _ = run(tmp_path, tmp_path / "nowhere", PAPER_LIMIT="1", BUDGET="8")
    assert "warning: the parts may take" in r.stdout
