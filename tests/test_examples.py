"""The example scripts run as written, on tiny data the test writes, and the README shows the same code."""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from barlowtwins.weights.load import load_backbone

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def run_script(script: Path, *args: str, cwd: Path) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))  # one thread: a shared small CPU
    done = subprocess.run([sys.executable, str(script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def losses(stdout: str) -> list[float]:
    return [float(v) for v in re.findall(r"loss (\S+)", stdout)]


@pytest.fixture
def jpeg_folder(tmp_path: Path) -> Path:
    """Real JPEG files of random colour patches, in two sub-folders (image_folder reads any depth)."""
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = tmp_path / "images" / f"part{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 80, size=(36 + i % 3, 40, 3), dtype=np.uint8)
        arr[4 + i: 20 + i, 8:24, i % 3] = 230
        Image.fromarray(arr).save(folder / f"{i}.jpg", quality=90)
    return tmp_path / "images"


def test_own_loop_trains_on_a_folder_and_saves_a_backbone_that_loads_without_flags(jpeg_folder, tmp_path):
    out = tmp_path / "own.safetensors"
    stdout = run_script(EXAMPLES / "own_loop.py", str(jpeg_folder), "--image-size", "16", "--steps", "10",
                        "--batch-size", "4", "--width", "8", "--projector", "32-32", "--workers", "0",
                        "--out", str(out), cwd=tmp_path)
    found = losses(stdout)
    assert len(found) == 1 and all(math.isfinite(v) for v in found), stdout  # step 10 of 10
    net = load_backbone(out)  # no flags: the architecture is in the file
    assert net.conv1.out_channels == 8 and net.conv1.kernel_size == (3, 3)  # width 8, the small stem
    with torch.no_grad():
        assert torch.isfinite(net(torch.randn(2, 3, 16, 16))).all()


def test_own_loop_refuses_a_folder_smaller_than_a_batch(jpeg_folder, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "src"))
    done = subprocess.run([sys.executable, str(EXAMPLES / "own_loop.py"), str(jpeg_folder), "--batch-size", "64"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "fewer than one batch of 64" in done.stderr


def readme_api_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The Python API"):]
    section = section[:section.index("\n## ", 1)]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_example_is_the_snippet_and_runs(tmp_path):
    snippet = (EXAMPLES / "api_snippet.py").read_text()
    code = snippet[snippet.index('"""', 3) + 3:].lstrip("\n")  # the code after the module docstring
    assert code == readme_api_code()
    stdout = run_script(EXAMPLES / "api_snippet.py", cwd=tmp_path)
    found = losses(stdout)
    assert len(found) == 2 and all(math.isfinite(v) for v in found), stdout  # one line per epoch
    assert "torch.Size([2, 128])" in stdout
    net = load_backbone(tmp_path / "backbone.safetensors")
    assert net.arch["backbone"] == "resnet18" and net.arch["width"] == 16
