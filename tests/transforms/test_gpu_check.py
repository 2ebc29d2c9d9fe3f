"""benchmarks/gpu_check.sh and its Python part exit cleanly with one message where no CUDA GPU is visible."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    for cmd in (["bash", str(ROOT / "benchmarks" / "gpu_check.sh")],
                [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--output", str(tmp_path / "r.json")]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        expected = "gpu_check: no CUDA GPU visible to PyTorch; nothing to check (run it on a GPU host)"
        assert r.stdout.strip().splitlines() == [expected]
    assert not (tmp_path / "r.json").exists()
