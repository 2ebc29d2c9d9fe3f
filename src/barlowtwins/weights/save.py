"""Save a backbone with its architecture, so that it loads without flags."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from barlowtwins.errors import CheckpointError
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.run_files import BACKBONE_NAME, SAFETENSORS_NAME
from barlowtwins.weights.sources import arch_from_config

ARCH_KEY = "barlowtwins.arch"


def backbone_state(backbone: nn.Module | dict) -> dict[str, torch.Tensor]:
    """CPU, contiguous, unshared copies of a module's (or state dict's) tensors; refuses non-finite weights."""
    state = backbone.state_dict() if isinstance(backbone, nn.Module) else backbone
    out = {k: v.detach().cpu().contiguous().clone() for k, v in state.items() if isinstance(v, torch.Tensor)}
    bad = [k for k, v in out.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"backbone has non-finite weights ({', '.join(bad[:3])}); not writing it")
    return out


def save_safetensors_atomic(state: dict[str, torch.Tensor], path: str | os.PathLike, arch: dict | None = None) -> None:
    """Write ``state`` as safetensors (temporary file + rename), the architecture in the metadata."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata={ARCH_KEY: json.dumps(arch or {}, default=list), "format": "pt"})
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_run_backbone(backbone: nn.Module, run_dir: str | os.PathLike, config: dict | None = None) -> None:
    """Write ``<run_dir>/backbone.pth`` and ``backbone.safetensors`` atomically (the trainer calls this at every
    checkpoint, so an interrupted or ``--max-steps`` run always has a loadable backbone)."""
    state = backbone_state(backbone)
    save_atomic(state, Path(run_dir) / BACKBONE_NAME)
    save_safetensors_atomic(state, Path(run_dir) / SAFETENSORS_NAME, arch_from_config(config))
