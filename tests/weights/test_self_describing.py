"""A narrow small-stem backbone loads anywhere: from its file alone (outside its run folder), through torch.hub,
and with the exact line `barlowtwins export` prints; errors of the library name its Python arguments."""

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from barlowtwins.cli import main
from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import FILE_MODE, save_atomic
from barlowtwins.weights.load import load_backbone

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def narrow(tmp_path_factory):
    """A resnet18 of width 16 with the small stem, as a plain state dict in a folder with nothing else."""
    torch.manual_seed(0)
    net = create_backbone("resnet18", stem="small", width=16).eval()
    path = tmp_path_factory.mktemp("alone") / "backbone.pth"
    save_atomic(net.state_dict(), path)
    return net, path


def _same(a, b):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


def test_a_narrow_plain_state_dict_loads_by_its_name_alone(narrow):
    net, path = narrow
    loaded = load_backbone(path, backbone="resnet18")
    assert loaded.arch["width"] == 16 and loaded.arch["stem"] == "small"
    _same(net, loaded)


def test_torch_hub_loads_a_narrow_backbone_outside_its_run_folder(narrow):
    net, path = narrow
    _same(net, torch.hub.load(str(ROOT), "resnet18", source="local", weights=str(path)))


@pytest.mark.parametrize("kwargs", [{"backbone": "resnet50"}, {"backbone": "resnet18", "width": 32}])
def test_library_errors_name_python_arguments_and_the_cli_names_flags(narrow, kwargs, tmp_path, capsys):
    _, path = narrow
    with pytest.raises(CheckpointError) as e:
        load_backbone(path, **kwargs)
    assert "backbone=" in str(e.value) and "--backbone" not in str(e.value)
    flags = [x for k, v in kwargs.items() for x in ("--" + k, str(v))]
    assert main(["export", "--checkpoint", str(path), *flags, "--output", str(tmp_path / "x.pth")]) != 0
    assert "--backbone/--stem/--width" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("stem", [None, "small-pool"])
def test_the_load_line_export_prints_runs(narrow, tmp_path, capsys, fmt, stem):
    _, path = narrow
    out = tmp_path / f"exported.{fmt}"
    extra = ["--stem", stem] if stem else []
    assert main(["export", "--checkpoint", str(path), "--format", fmt, "--output", str(out), *extra]) == 0
    line = capsys.readouterr().out.strip().split("load it with: ", 1)[1]
    assert stat.S_IMODE(os.stat(out).st_mode) == FILE_MODE
    code = line + "\nprint(tuple(net.conv1.weight.shape), getattr(net, 'arch', {}).get('stem'))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("(16, 3, 3, 3)")
    assert run.stdout.strip().endswith(stem or "small")
