"""Backbone weights in detectron2's layout, both ways."""

from __future__ import annotations

import os
import pickle

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


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits the few globals a pickled dict of numpy arrays needs, nothing else (no code can run)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a weights file")


def read_detectron2(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A detectron2-layout ``.pkl`` back as a torchvision state dict, unpickling numpy arrays only."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyOnlyUnpickler(f).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable detectron2 weights file ({e})") from None
    model = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model, dict):
        raise CheckpointError(f"{path} holds no 'model' dict of arrays")
    return {k: torch.from_numpy(np.array(v)) for k, v in detectron2_to_torchvision(model).items()}
