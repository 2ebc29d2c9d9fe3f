"""The files of a run folder and safe reading of checkpoints."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch
import yaml

from barlowtwins.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pth"


BACKBONE_NAME = "backbone.pth"


SAFETENSORS_NAME = "backbone.safetensors"


FORMAT = "barlowtwins"


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely (tensors and plain containers only), with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail anywhere in the unpickler (IndexError, KeyError...)
        forbidden = re.search(r"GLOBAL ([\w.]+)", str(e))
        if forbidden:
            raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint: it holds a Python object "
                                  f"({forbidden.group(1)}) that could run code when loaded, and only tensors and "
                                  "plain containers are read; save a state dict instead") from None
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        first = first if len(first) <= 200 else first[:197] + "..."
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint ({first}); "
                              "it may be truncated or not a state dict") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of tensors")
    return obj


def read_run_config(path: str | os.PathLike) -> dict:
    """A run folder's ``config.yaml`` as a dict, with a one-line error when it is malformed."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CheckpointError(f"cannot read {path} ({type(e).__name__}); it is malformed: restore it from the "
                              "checkpoint's config or delete it") from None
    if data is not None and not isinstance(data, dict):
        raise CheckpointError(f"{path} is not a mapping of config fields; restore it or delete it")
    return data or {}
