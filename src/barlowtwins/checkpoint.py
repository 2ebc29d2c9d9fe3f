"""Atomic checkpoints, safe loading, backbone export, and reading backbones from every common format.

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

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from .errors import CheckpointError

CHECKPOINT_NAME = "checkpoint.pth"
BACKBONE_NAME = "backbone.pth"
SAFETENSORS_NAME = "backbone.safetensors"
FORMAT = "barlowtwins"


class _HashingWriter:
    """A file wrapper that hashes what is written through it (the checksum costs no second read)."""

    def __init__(self, f):
        self.f, self.sha256 = f, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def temp_path(path: Path) -> Path:
    """The temporary name ``save_atomic`` writes ``path`` under (``.<name>.tmp-<pid>``)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def atomic_write(path: str | os.PathLike, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix, for writers that look at it), then rename
    it over ``path``: a crash mid-write leaves the previous file intact. Used for every non-checkpoint output."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_temp(obj, path: str | os.PathLike) -> tuple[Path, str]:
    """``torch.save`` to ``path``'s temporary name, fsync; return (that file, its sha256). The file is removed
    again if writing fails (disk full included), and the error raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            writer = _HashingWriter(f)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, writer.sha256.hexdigest()


def save_atomic(obj, path: str | os.PathLike) -> str:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``; returns the
    file's sha256.

    A crash mid-write leaves the previous file intact: the rename is atomic on POSIX and Windows.
    """
    tmp, digest = write_temp(obj, path)
    try:
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest


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


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def export_backbone(backbone: nn.Module, path: str | os.PathLike) -> None:
    """Save the backbone as a plain torchvision state dict (no prefixes, no classifier keys)."""
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    save_atomic(state, path)


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


def _arch_from_config(cfg: dict | None) -> dict:
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
            return BackboneSource(part, f"{origin} ({fmt}, keys {prefix}*)", _arch_from_config(config))
    return BackboneSource(_strip_module(tensors), f"{origin} (plain state dict)", _arch_from_config(config))


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
        from .models import create_backbone

        _, name, weights = parts
        import torchvision

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
                src.arch = {**_arch_from_config(cfg), **src.arch}
                return src
        raise CheckpointError(f"run folder {path} has neither {BACKBONE_NAME} nor {CHECKPOINT_NAME} "
                              f"(nor {SAFETENSORS_NAME}); "
                              "has pretraining started there?")
    if path.suffix == ".safetensors":
        src = load_safetensors_state(path)
    else:
        src = _from_dict(load_checkpoint(path), str(path))
    bad = [k for k, v in src.state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:  # export, knn, linear... never accept weights of a run that diverged
        raise CheckpointError(f"{src.origin} holds non-finite values (NaN or Inf) in {len(bad)} tensor(s), e.g. "
                              f"{bad[0]}; the run diverged before it was saved: use an earlier checkpoint")
    if not src.arch and (path.parent / "config.yaml").is_file():
        src.arch = _arch_from_config(read_run_config(path.parent / "config.yaml"))
    src.sha256 = file_sha256(path)
    return src


def load_safetensors_state(path: str | os.PathLike) -> BackboneSource:
    """A backbone state dict from a safetensors file (no pickle); ``arch`` from its ``barlowtwins.arch`` metadata."""
    import json

    from safetensors import SafetensorError, safe_open

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
