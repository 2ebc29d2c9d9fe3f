"""Backbone weights in detectron2's layout, both ways."""

from __future__ import annotations

import io
import math
import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import torch

from barlowtwins.errors import CheckpointError
from barlowtwins.weights.sources import without_head


def torchvision_to_detectron2(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """detectron2's key renaming for torchvision ResNets (its ``tools/convert-torchvision-to-d2.py``)."""
    out = {}
    for k, v in without_head(state).items():
        new = k if "layer" in k else "stem." + k
        for t in (1, 2, 3, 4):
            new = new.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            new = new.replace(f"bn{t}", f"conv{t}.norm")
        new = new.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")
        out[new] = v
    return out


def detectron2_to_torchvision(state: dict) -> dict:
    """The inverse of `torchvision_to_detectron2`."""
    out = {}
    for k, v in state.items():
        new = k[len("stem."):] if k.startswith("stem.") else k
        for t in (1, 2, 3, 4):
            new = new.replace(f"res{t + 1}.", f"layer{t}.")
        new = new.replace("shortcut.norm", "downsample.1").replace("shortcut", "downsample.0")
        for t in (1, 2, 3):
            new = new.replace(f"conv{t}.norm", f"bn{t}")
        out[new] = v
    return out


class _Call:
    """What the unpickler gets for one of numpy's few constructors: the call recorded, no numpy code run.

    Damaged or hostile bytes can hand numpy's own constructors any arguments (an array of 2**62 elements, a
    dtype of no known kind, a state that disagrees with its shape), which fail in many ways or allocate as asked;
    `_to_array` rebuilds each array itself, from validated arguments only.
    """

    __slots__ = ("args", "name", "state")

    def __init__(self, name: str, args: tuple):
        self.name, self.args, self.state = name, args, None

    def __setstate__(self, state):  # pickle's BUILD
        self.state = state


class _NdarrayType:
    """Stands for ``numpy.ndarray`` (the class argument of ``_reconstruct``); not callable."""


def _recorder(name: str):
    return lambda *args: _Call(name, args)


def _latin1(*args):
    """``_codecs.encode(text, "latin1")``: how protocol-2 pickles (Python 2's detectron2 files) hold bytes."""
    if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
        return args[0].encode("latin1")
    raise pickle.UnpicklingError("_codecs.encode is only read with a str and latin1")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the few globals a pickled dict of numpy arrays needs, each as a recorder (no code can run)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _recorder("reconstruct"),
               ("numpy._core.multiarray", "_reconstruct"): _recorder("reconstruct"),
               ("numpy.core.numeric", "_frombuffer"): _recorder("frombuffer"),
               ("numpy._core.numeric", "_frombuffer"): _recorder("frombuffer"),
               ("numpy.core.multiarray", "scalar"): _recorder("scalar"),
               ("numpy._core.multiarray", "scalar"): _recorder("scalar"),
               ("numpy", "dtype"): _recorder("dtype"),
               ("numpy", "ndarray"): _NdarrayType,
               ("_codecs", "encode"): _latin1}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")


# The element types a backbone's weights have (numpy's dtype codes: size in bytes after the kind).
_DTYPES = ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "b1")


def _dtype(call) -> np.dtype:
    if not (isinstance(call, _Call) and call.name == "dtype" and call.args and call.args[0] in _DTYPES):
        raise ValueError("an array of other elements than numbers")
    order = call.state[1] if isinstance(call.state, tuple) and len(call.state) > 1 else "|"
    dt = np.dtype(call.args[0])
    return dt.newbyteorder(order) if order in ("<", ">") else dt


def _shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, tuple) or len(shape) > 8 or not all(type(d) is int and d >= 0 for d in shape):
        raise ValueError(f"an array shape {shape!r:.40}")
    return shape


def _from_bytes(raw, dt: np.dtype, shape: tuple, fortran: bool) -> np.ndarray:
    raw = raw.encode("latin1") if isinstance(raw, str) else raw  # protocol 2 from Python 2
    if not isinstance(raw, (bytes, bytearray, pickle.PickleBuffer)):
        raise ValueError("array data that is not bytes")
    raw = bytes(raw)
    count = math.prod(shape)
    if len(raw) != count * dt.itemsize:  # the data's own length bounds what is allocated: never more than the file
        raise ValueError(f"{len(raw)} bytes of data for an array of shape {shape}")
    arr = np.frombuffer(raw, dtype=dt, count=count).reshape(shape, order="F" if fortran else "C")
    return arr.astype(dt.newbyteorder("="), order="C", copy=True)  # writable, native byte order


def _to_array(value) -> np.ndarray:
    """The numpy array a recorded constructor call stands for, from validated arguments only."""
    if not isinstance(value, _Call):
        raise ValueError(f"a {type(value).__name__}, not an array")
    if value.name == "reconstruct":  # _reconstruct(ndarray, (0,), b"b") then __setstate__(state)
        state = value.state
        if not (len(value.args) == 3 and value.args[0] is _NdarrayType and isinstance(state, tuple)):
            raise ValueError("an array that is not a plain numpy array")
        if len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, data)
        if len(state) != 4 or not isinstance(state[2], bool):
            raise ValueError("an array of another layout")
        return _from_bytes(state[3], _dtype(state[1]), _shape(state[0]), state[2])
    if value.name == "frombuffer":  # protocol 5: _frombuffer(data, dtype, shape, order)
        if len(value.args) != 4 or value.args[3] not in ("C", "F"):
            raise ValueError("an array of another layout")
        data, dt, shape, order = value.args
        return _from_bytes(data, _dtype(dt), _shape(shape), order == "F")
    if value.name == "scalar" and len(value.args) == 2:  # scalar(dtype, data): a 0-d value
        return _from_bytes(value.args[1], _dtype(value.args[0]), (), False)
    raise ValueError("a value that is not an array")


def _check_opcodes(data: bytes) -> None:
    """Walk the pickle's opcodes without running them (`pickletools`), refusing what would make the unpickler
    allocate more than the file holds: a length past the end of the data (a 2**60-byte string), a frame longer
    than the file, a memo index beyond the opcodes so far (the C unpickler sizes its memo to the index)."""
    for n, (op, arg, pos) in enumerate(pickletools.genops(data)):
        if op.name not in ("FRAME", "PUT", "BINPUT", "LONG_BINPUT"):
            continue
        # these opcodes' argument is an integer (a length, a memo index; PUT's decimal reader may give a bool);
        # genops reads the bytes through a BytesIO, so every opcode has its position
        assert isinstance(arg, int) and pos is not None
        if op.name == "FRAME" and arg > len(data) - pos:
            raise ValueError(f"a frame of {arg} bytes at byte {pos}, past the end of the file")
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not 0 <= int(arg) <= n:
            raise ValueError(f"memo index {arg} at byte {pos}, beyond the {n} opcodes before it")


def read_detectron2(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A detectron2-layout ``.pkl`` back as a torchvision state dict, unpickling numpy arrays only.

    The unpickler admits numpy's array constructors as recorders and rebuilds every array from checked arguments,
    so damaged or hostile bytes give one `CheckpointError` line, never another exception or a large allocation.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}: {e.strerror or e}); check the path") from None
    try:
        _check_opcodes(data)
        obj = _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # noqa: BLE001 -- damaged pickles fail in many ways (EOFError, OverflowError, KeyError...)
        first = (str(e).strip().splitlines() or [""])[0][:150]
        reason = f"{type(e).__name__}: {first}" if first else type(e).__name__
        raise CheckpointError(f"{path} is not a readable detectron2 weights file ({reason}); it is damaged or not "
                              "a detectron2 .pkl: export it again") from None
    model = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model, dict) or not model:
        raise CheckpointError(f"{path} holds no 'model' dict of arrays; it is not a detectron2 weights file")
    state = {}
    for key, value in model.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path} has key {key!r:.40} in its model; detectron2 weights are named by strings")
        try:
            state[key] = torch.from_numpy(_to_array(value))
        except (ValueError, TypeError) as e:
            raise CheckpointError(f"{path}: model entry {key!r:.80} is {str(e)[:80]}; detectron2 weights are "
                                  "arrays of numbers") from None
    return detectron2_to_torchvision(state)
