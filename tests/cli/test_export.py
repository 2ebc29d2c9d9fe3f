"""`barlowtwins export`: a run folder's backbone written as pth, safetensors or TorchScript, each read back to
the same network; bad input is one line, exit 2."""

import re

import pytest
import torch
from conftest import random_images, reference_backbone
from safetensors.torch import load_file

from barlowtwins.cli import main


def _export(run_dir, fmt, out, capsys, *extra) -> str:
    assert main(["export", "--checkpoint", str(run_dir), "--format", fmt, "--output", str(out), *extra]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("wrote ") and f"to {out} as " in printed
    return printed


def test_pth_and_safetensors_hold_the_runs_backbone(run_dir, tmp_path, capsys):
    want = reference_backbone(run_dir).state_dict()
    printed = _export(run_dir, "pth", tmp_path / "b.pth", capsys)
    assert re.fullmatch(r"wrote \d+ tensors from .+ to .+b\.pth as .+", printed), printed
    _export(run_dir, "safetensors", tmp_path / "b.safetensors", capsys)
    for state in (torch.load(tmp_path / "b.pth", weights_only=True), load_file(str(tmp_path / "b.safetensors"))):
        assert set(state) == set(want) and not any(k.startswith("fc.") for k in state)  # without the classifier
        for k, v in state.items():
            torch.testing.assert_close(v, want[k], msg=k)


def test_torchscript_is_traced_at_the_pretraining_size_and_computes_the_same(run_dir, tmp_path, capsys):
    _export(run_dir, "torchscript", tmp_path / "b.pt", capsys)
    traced = torch.jit.load(str(tmp_path / "b.pt"))
    x = random_images(2, 16)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), reference_backbone(run_dir)(x), rtol=1e-4, atol=1e-5)
    assert capsys.readouterr().err == ""  # the run folder records its size: no warning about 224 px


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "{tmp}/missing.pth", "--output", "{tmp}/x.pth"], "does not exist"),
    (["--checkpoint", "{tmp}/junk.pth", "--output", "{tmp}/x.pth"], "not a PyTorch/safetensors weights file"),
    (["--checkpoint", "{run}", "--output", "{tmp}/x.pth", "--width", "9999"], "9999"),
])
def test_bad_input_is_one_line_exit_2(run_dir, tmp_path, capsys, args, message):
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 64)
    argv = ["export", *[a.format(tmp=tmp_path, run=run_dir) for a in args]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("barlowtwins export: error: ") and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "x.pth").exists()


def test_an_unknown_format_is_refused_by_the_parser(run_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["export", "--checkpoint", str(run_dir), "--format", "tflite", "--output", str(tmp_path / "x")])
    assert e.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
