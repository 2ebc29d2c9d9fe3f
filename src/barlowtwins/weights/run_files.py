"""The files of a run folder and safe reading of checkpoints."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import torch
import yaml

from barlowtwins.errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pth"


BACKBONE_NAME = "backbone.pth"


SAFETENSORS_NAME = "backbone.safetensors"


FORMAT = "barlowtwins"


NOT_WEIGHTS_FIX = "pass a run folder, a .pth/.pt state dict or checkpoint, or a .safetensors file"


def sniff_weights_file(path: str | os.PathLike) -> str:
    """What a file's first bytes say it is: ``zip`` (torch.save's format), ``pickle`` (torch.save's legacy format),
    ``safetensors``, ``empty`` or ``other``."""
    with open(path, "rb") as f:
        head = f.read(16)
        size = os.fstat(f.fileno()).st_size
    if not head:
        return "empty"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "zip"
    if head[0] == 0x80 and len(head) > 1 and 2 <= head[1] <= 5:
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= size - 8:
        return "safetensors"
    return "other"


def _load_failure(e: Exception) -> str:
    """The reason a load failed in a few words: the unpickler's own message, never PyTorch's advice around it
    (which suggests loading with ``weights_only=False``, that is, running whatever code the file holds)."""
    text = str(e).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].strip()
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    first = first.split(". ", 1)[0].rstrip(".")  # the first sentence: the rest is boilerplate
    if not first or "weights_only" in first or "Weights only" in first:
        return type(e).__name__
    first = f"{type(e).__name__}: {first}" if type(e).__name__ not in ("RuntimeError", "UnpicklingError") else first
    return first if len(first) <= 160 else first[:157] + "..."


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a checkpoint safely (tensors and plain containers only), with one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        kind = sniff_weights_file(path)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e.strerror or e}); "
                              "check its permissions") from None
    if kind in ("empty", "other"):
        with open(path, "rb") as f:
            head = f.read(8)
        detail = "it is empty" if kind == "empty" else (f"it starts with {head!r}: neither a zip archive, a pickle "
                                                        "nor a safetensors header")
        raise CheckpointError(f"{path} is not a PyTorch/safetensors weights file ({detail}), so not a readable "
                              f"PyTorch checkpoint; {NOT_WEIGHTS_FIX}")
    if kind == "safetensors":
        raise CheckpointError(f"{path} is a safetensors file: name it .safetensors to read it as one "
                              "(it is not a PyTorch checkpoint)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # protocol 4/5 pickles load fine
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file can fail anywhere in the unpickler (IndexError, KeyError...)
        forbidden = re.search(r"GLOBAL ([\w.]+)", str(e))
        if forbidden:
            raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint: it holds a Python object "
                                  f"({forbidden.group(1)}) that could run code when loaded, and only tensors and "
                                  "plain containers are read; save a state dict instead") from None
        raise CheckpointError(f"checkpoint {path} is not a readable PyTorch checkpoint ({_load_failure(e)}); "
                              "it is truncated or damaged: copy or save it again") from None
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
