"""detectron2's key layout both ways, its reader refusing code, and the export refusing a small stem."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from conftest import random_images, trained_backbone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barlowtwins.cli import main
from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.detectron2 import detectron2_to_torchvision, read_detectron2, torchvision_to_detectron2


def test_detectron2_layout(tmp_path):
    net = trained_backbone("resnet50", width=8)  # bottleneck blocks (conv3, shortcut) at a CPU-test size
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
        torch.testing.assert_close(restored(random_images(2, 64)), net(random_images(2, 64)), rtol=0, atol=0)


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


def _small_pkl(protocol: int = 4) -> bytes:
    model = {"stem.conv1.weight": np.arange(54, dtype=np.float32).reshape(2, 3, 3, 3),
             "stem.conv1.norm.running_mean": np.asfortranarray(np.ones((2, 2), dtype=">f8")),
             "res2.0.conv1.norm.num_batches_tracked": np.array(3, dtype=np.int64), "bias": np.float32(0.5)}
    return pickle.dumps({"model": model, "__author__": "barlowtwins", "matching_heuristics": True}, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_detectron2_reader_reads_every_pickle_protocol(tmp_path, protocol):
    (tmp_path / "m.pkl").write_bytes(_small_pkl(protocol))
    state = read_detectron2(tmp_path / "m.pkl")
    assert torch.equal(state["conv1.weight"], torch.arange(54, dtype=torch.float32).reshape(2, 3, 3, 3))
    assert torch.equal(state["bn1.running_mean"], torch.ones(2, 2, dtype=torch.float64))
    assert state["layer1.0.bn1.num_batches_tracked"].item() == 3 and state["bias"].item() == 0.5


def _reconstruct_call(shape) -> bytes:
    """``{"model": {"w": _reconstruct(ndarray, shape, b"b")}}``: numpy's array constructor asked for ``shape``
    (what a damaged or hostile file can do; numpy itself only ever pickles shape (0,) there)."""
    return (b"\x80\x02}X\x05\x00\x00\x00model}X\x01\x00\x00\x00wcnumpy._core.multiarray\n_reconstruct\n"
            b"cnumpy\nndarray\n" + pickle.dumps(shape, protocol=2)[2:-1] + b"C\x01b\x87Rss.")


@pytest.mark.parametrize("data,match", [
    (_reconstruct_call((2 ** 62,)), "model entry 'w' is an array"),  # was a MemoryError
    (_reconstruct_call((2 ** 64,)), "model entry 'w' is an array"),
    (_reconstruct_call((-1,)), "model entry 'w' is an array"),
    (pickle.dumps({"model": {1: np.zeros(2, np.float32)}}), "key 1"),  # was an AttributeError
    (pickle.dumps({"model": {"w": np.array(["a"])}}), "'w' is an array of other elements than numbers"),
    (pickle.dumps({"model": {"w": [1, 2]}}), "'w' is a list, not an array"),
    (pickle.dumps([1]), "holds no 'model' dict"),
    (b"", "not a readable detectron2 weights file .ValueError"),
    (b"\x80\x02K\x01p1000000000000000\n.", "memo index 1000000000000000"),  # the C unpickler sizes its memo to it
    (b"\x80\x05\x96" + (2 ** 62).to_bytes(8, "little") + b"abc.", "bytearray8"),  # was a MemoryError
], ids=["huge-shape", "shape-over-int64", "negative-shape", "int-key", "strings", "list", "list-top", "empty",
        "memo-index", "huge-bytearray"])
def test_detectron2_reader_errors_are_one_line(tmp_path, data, match):
    (tmp_path / "x.pkl").write_bytes(data)
    with pytest.raises(CheckpointError, match=match) as e:
        read_detectron2(tmp_path / "x.pkl")
    assert "\n" not in str(e.value) and "x.pkl" in str(e.value)


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255), st.sampled_from("rdi")), min_size=1,
                      max_size=6), random=st.binary(max_size=64), protocol=st.sampled_from([2, 4, 5]))
def test_detectron2_reader_fuzz_is_tensors_or_one_line_checkpoint_error(edits, random, protocol):
    """Damaged files (bytes replaced, deleted, inserted; tails of random bytes): every outcome is a dict of tensors
    or one CheckpointError line, never another exception."""
    import os
    import tempfile

    data = bytearray(_small_pkl(protocol))
    for pos, byte, op in edits:
        pos %= len(data) + (op == "i")
        if op == "r" and pos < len(data):
            data[pos] = byte
        elif op == "d" and pos < len(data):
            del data[pos]
        elif op == "i":
            data.insert(pos, byte)
    data += random
    fd, name = tempfile.mkstemp(suffix=".pkl")
    try:
        os.write(fd, bytes(data))
        os.close(fd)
        try:
            state = read_detectron2(name)
        except CheckpointError as e:
            assert "\n" not in str(e)
        else:
            assert all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    finally:
        os.unlink(name)
