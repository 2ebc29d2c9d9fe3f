"""The files of a run folder: what a weights file is by its first bytes, checkpoints read safely with one-line
errors, and a run folder's config.yaml."""

import pickle

import pytest
import torch
from safetensors.torch import save_file

from barlowtwins.errors import CheckpointError
from barlowtwins.weights.run_files import (
    BACKBONE_NAME,
    CHECKPOINT_NAME,
    SAFETENSORS_NAME,
    load_checkpoint,
    read_run_config,
    sniff_weights_file,
)


def test_the_run_folder_file_names():
    assert (CHECKPOINT_NAME, BACKBONE_NAME, SAFETENSORS_NAME) == ("checkpoint.pth", "backbone.pth",
                                                                   "backbone.safetensors")


def test_sniff_tells_the_formats_apart(tmp_path):
    torch.save({"w": torch.ones(2)}, tmp_path / "zip.pth")
    torch.save({"w": torch.ones(2)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file({"w": torch.ones(2)}, str(tmp_path / "w.safetensors"))
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "text.pth").write_text("hello, not weights")
    (tmp_path / "pickle.pth").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    kinds = {p.name: sniff_weights_file(p) for p in sorted(tmp_path.iterdir())}
    assert kinds == {"zip.pth": "zip", "legacy.pth": "pickle", "w.safetensors": "safetensors", "empty.pth": "empty",
                     "text.pth": "other", "pickle.pth": "pickle"}


def test_a_safetensors_header_longer_than_the_file_is_not_taken_for_one(tmp_path):
    (tmp_path / "x").write_bytes((10**6).to_bytes(8, "little") + b"{}")
    assert sniff_weights_file(tmp_path / "x") == "other"


def test_a_checkpoint_of_tensors_and_containers_loads(tmp_path):
    ckpt = {"step": 3, "model": {"w": torch.arange(4.0)}, "config": {"lr": 0.1, "terms": ["a", "b"]}}
    torch.save(ckpt, tmp_path / "c.pth")
    got = load_checkpoint(tmp_path / "c.pth")
    assert got["step"] == 3 and torch.equal(got["model"]["w"], torch.arange(4.0)) and got["config"] == ckpt["config"]


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_a_python_object_in_a_checkpoint_is_named_and_never_run(tmp_path, capsys):
    torch.save({"x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"holds a Python object \((builtins\.)?print\) that could run code"):
        load_checkpoint(tmp_path / "evil.pth")
    assert "this must never run" not in capsys.readouterr().out


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "does not exist; check the path"),
    (lambda p: p.write_bytes(b""), "is not a PyTorch/safetensors weights file (it is empty)"),
    (lambda p: p.write_bytes(b"GIF89a\x00\x00rest"), "it starts with b'GIF89a"),
    (lambda p: torch.save(torch.ones(3), p), "holds a Tensor, not a dict of tensors"),
])
def test_what_is_no_checkpoint_is_one_line(tmp_path, make, message):
    path = tmp_path / "c.pth"
    make(path)
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert "weights_only=False" not in str(e.value)  # never the advice to unpickle whatever it holds


def test_a_truncated_checkpoint_is_one_line_naming_it(tmp_path):
    torch.save({"model": {"w": torch.randn(1000)}}, tmp_path / "c.pth")
    data = (tmp_path / "c.pth").read_bytes()
    (tmp_path / "c.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="is not a readable PyTorch checkpoint .*truncated or damaged") as e:
        load_checkpoint(tmp_path / "c.pth")
    assert "\n" not in str(e.value)


def test_a_safetensors_file_named_pth_says_so(tmp_path):
    save_file({"w": torch.ones(2)}, str(tmp_path / "w.pth"))
    with pytest.raises(CheckpointError, match="is a safetensors file: name it .safetensors"):
        load_checkpoint(tmp_path / "w.pth")


def test_a_run_config_is_read_as_a_dict(tmp_path):
    (tmp_path / "config.yaml").write_text("backbone: resnet18\nwidth: 8\n")
    assert read_run_config(tmp_path / "config.yaml") == {"backbone": "resnet18", "width": 8}
    (tmp_path / "empty.yaml").write_text("")
    assert read_run_config(tmp_path / "empty.yaml") == {}


@pytest.mark.parametrize("content, message", [
    (b"backbone: [resnet18\n", "cannot read"),
    (bytes(range(256)), "cannot read"),
    (b"- a\n- b\n", "is not a mapping of config fields"),
    (None, "cannot read"),
])
def test_a_malformed_run_config_is_one_line(tmp_path, content, message):
    path = tmp_path / "config.yaml"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as e:
        read_run_config(path)
    assert "\n" not in str(e.value) and "config.yaml" in str(e.value)
