"""Safe loading: reading backbones from every common format.

Formats `load_backbone_state` understands:

* a run folder of ours (``backbone.pth``, else the ``backbone.*`` part of ``checkpoint.pth``);
* a plain torchvision state dict (our ``backbone.pth``; the official release ``resnet50.pth``);
* a safetensors file (our ``backbone.safetensors``; read with no pickle at all, architecture from its metadata);
* the official full training checkpoint: ``{"epoch", "model", "optimizer"}`` with DDP-prefixed keys
  ``module.backbone.*`` / ``module.projector.*`` / ``module.bn.*``;
* our training checkpoint (``{"model": {"backbone.*", "projector.*"}, "optimizer", "config", ...}``);
* torchvision's own weights, named ``torchvision:<model>:<weights>`` (e.g. ``torchvision:resnet50:IMAGENET1K_V2``).

Everything is loaded with ``torch.load(..., weights_only=True)`` or safetensors: a checkpoint cannot run code.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from torch import nn

from barlowtwins.errors import CheckpointError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import file_sha256
from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.weights.run_files import (
    BACKBONE_NAME,
    CHECKPOINT_NAME,
    SAFETENSORS_NAME,
    load_checkpoint,
    read_run_config,
)

# --------------------------------------------------------------------------------------------------------
# Reading a backbone from any source
# --------------------------------------------------------------------------------------------------------

@dataclass
class BackboneSource:
    """A backbone state dict and what is known of its architecture."""

    state: dict[str, torch.Tensor]
    origin: str  # human-readable: which file, which format
    arch: dict = field(default_factory=dict)  # backbone/stem/width/image_size when the source says
    sha256: str | None = None


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def without_head(state: dict) -> dict:
    """A torchvision ResNet state dict without its classifier (``fc.*``)."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def arch_from_config(cfg: dict | None) -> dict:
    if not cfg:
        return {}
    keys = ("backbone", "stem", "width", "image_size", "dataset", "data_dir", "mean", "std")
    return {k: cfg[k] for k in keys if k in cfg}


def _from_dict(obj: dict, origin: str) -> BackboneSource:
    config = obj.get("config") if isinstance(obj.get("config"), dict) else None
    for key in ("model", "state_dict"):  # training checkpoints (ours, official, torchvision references)
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{origin} holds no tensors; expected a backbone state dict or a training checkpoint")
    for prefix, fmt in (("module.backbone.", "official training checkpoint"), ("backbone.", "barlowtwins checkpoint"),
                        ("_orig_mod.backbone.", "barlowtwins checkpoint (compiled)")):
        part = _strip(tensors, prefix)
        if part:
            return BackboneSource(part, f"{origin} ({fmt}, keys {prefix}*)", arch_from_config(config))
    return BackboneSource(_strip_module(tensors), f"{origin} (plain state dict)", arch_from_config(config))


def _strip_module(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return _strip(state, "module.")
    return state


def load_backbone_state(source: str | os.PathLike) -> BackboneSource:
    """A backbone state dict from a run folder, a file of any supported format, or torchvision weights."""
    text = str(source)
    if text.startswith("torchvision:"):
        parts = text.split(":")
        if len(parts) != 3:
            raise CheckpointError(f"'{text}': write torchvision weights as torchvision:<model>:<weights>, "
                                  "e.g. torchvision:resnet50:IMAGENET1K_V2")
        _, name, weights = parts
        if name in torchvision.models.list_models():
            enum = torchvision.models.get_model_weights(name)
            if weights != "DEFAULT" and weights not in enum.__members__:
                raise CheckpointError(f"torchvision has no weights '{weights}' for {name}; choose one of "
                                      f"{', '.join(dict.fromkeys(['DEFAULT', *enum.__members__]))}")
        try:
            net = create_backbone(name, weights=weights)
        except (OSError, RuntimeError) as e:  # URLError is an OSError
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"could not get torchvision weights {name}:{weights} ({first[:150]}); offline, "
                                  "put the file in ~/.cache/torch/hub/checkpoints/ or pass a weights file") from None
        return BackboneSource(net.state_dict(), f"torchvision {name} weights {weights}",
                              {"backbone": name, "stem": "standard"})
    path = Path(source).expanduser()
    if path.is_dir():
        cfg = None
        if (path / "config.yaml").is_file():
            cfg = read_run_config(path / "config.yaml")
        for name in (BACKBONE_NAME, SAFETENSORS_NAME, CHECKPOINT_NAME):
            if (path / name).is_file():
                src = load_backbone_state(path / name)
                src.arch = {**arch_from_config(cfg), **src.arch}
                return src
        raise CheckpointError(f"run folder {path} has neither {BACKBONE_NAME} nor {CHECKPOINT_NAME} "
                              f"(nor {SAFETENSORS_NAME}); "
                              "has pretraining started there?")
    if path.suffix == ".safetensors":
        src = load_safetensors_state(path)
    else:
        src = _from_dict(load_checkpoint(path), str(path))
    bad = nonfinite_names(src.state.items())
    if bad:  # export, knn, linear... never accept weights of a run that diverged
        raise CheckpointError(f"{src.origin} holds non-finite values (NaN or Inf) in {len(bad)} tensor(s), e.g. "
                              f"{bad[0]}; the run diverged before it was saved: use an earlier checkpoint")
    if not src.arch and (path.parent / "config.yaml").is_file():
        src.arch = arch_from_config(read_run_config(path.parent / "config.yaml"))
    src.sha256 = file_sha256(path)
    return src


def load_safetensors_state(path: str | os.PathLike) -> BackboneSource:
    """A backbone state dict from a safetensors file (no pickle); ``arch`` from its ``barlowtwins.arch`` metadata."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"checkpoint {path} is not a readable safetensors file ({first[:200]})") from None
    try:
        arch = json.loads(meta.get("barlowtwins.arch", "{}"))
    except json.JSONDecodeError:
        arch = {}
    if not state:
        raise CheckpointError(f"{path} holds no tensors; expected a backbone state dict")
    return BackboneSource(_strip_module(state), f"{path} (safetensors)", arch if isinstance(arch, dict) else {})


def load_backbone_weights(backbone: nn.Module, src: BackboneSource) -> list[str]:
    """Load ``src`` into ``backbone`` strictly (the classifier head aside); return the loaded key names.

    Raises a `CheckpointError` naming the missing, unexpected or mis-shaped keys.
    """
    own = backbone.state_dict()
    head = getattr(backbone, "head_name", "fc")
    state = {k: v for k, v in src.state.items() if not k.startswith(head + ".")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if shapes:
            parts.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:2])})")
        raise CheckpointError(f"{src.origin} does not match backbone {type(backbone).__name__}: "
                              f"{', '.join(parts)}; pass the matching --backbone/--stem/--width")
    backbone.load_state_dict(state, strict=True)
    return list(state)
