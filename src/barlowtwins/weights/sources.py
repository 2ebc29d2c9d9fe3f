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

The architecture a source records (safetensors metadata, a checkpoint's config, a run folder's ``config.yaml``)
is checked before anything is built from it: each field's type and range (the bounds of `models`), then against
the file's own tensors (a ResNet's width and stem from ``conv1.weight``; the named backbone's keys and shapes on the
meta device, which allocates nothing). Width and stem the source does not record are read off the tensors.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torchvision
from safetensors import SafetensorError, safe_open
from torch import nn

from barlowtwins.errors import CheckpointError, ConfigError
from barlowtwins.models.backbones import MAX_IMAGE_SIZE, MAX_WIDTH, STEMS, TIMM_PREFIX, create_backbone
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
    arch_from: dict = field(default_factory=dict)  # field of ``arch`` -> where it was read ("tensors": inferred)


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def without_head(state: dict) -> dict:
    """A torchvision ResNet state dict without its classifier (``fc.*``)."""
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


ARCH_KEYS = ("backbone", "stem", "width", "image_size", "dataset", "data_dir", "mean", "std")


def arch_from_config(cfg: dict | None) -> dict:
    if not cfg:
        return {}
    return {k: cfg[k] for k in ARCH_KEYS if k in cfg}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _field_problem(key: str, value) -> str | None:
    """What is wrong with one recorded architecture field (None: nothing). ``None`` values mean "not recorded"."""
    if value is None:
        return None
    if key in ("width", "image_size"):
        hi = MAX_WIDTH if key == "width" else MAX_IMAGE_SIZE
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer from 1 to {hi}"
        return "expected at least 1" if value < 1 else f"at most {hi} is allowed" if value > hi else None
    if key == "stem":
        return None if isinstance(value, str) and value in STEMS else f"expected one of {', '.join(STEMS)}"
    if key in ("mean", "std"):
        if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(_number(v) for v in value):
            return "expected 3 finite numbers, one per RGB channel"
        return None if key == "mean" or all(v > 0 for v in value) else "expected 3 positive numbers"
    if key == "backbone":
        return None if isinstance(value, str) and value.strip() else "expected a backbone name such as resnet50"
    return None if isinstance(value, str) else "expected a string"  # dataset, data_dir


# What a mismatch error asks for, in the Python arguments of `load_backbone` (the library's error);
# `cli_message` turns it into the command line's flags.
ARGS_HINT = "pass the matching backbone=, stem= and width= arguments"
FLAGS_HINT = "pass the matching --backbone/--stem/--width"


def cli_message(text: str) -> str:
    """An error of this package as the command line says it: Python arguments named as their flags."""
    return text.replace(ARGS_HINT, FLAGS_HINT)


def _fix(where: str) -> str:
    """How to repair a wrong architecture field recorded in ``where``."""
    if where.endswith("'s metadata"):
        return "save the backbone again with its real architecture (barlowtwins.save_backbone)"
    return "correct or delete that field"


def check_arch_fields(arch: dict, where: str) -> dict:
    """``arch`` with its fields checked (types and the bounds of `models`); mean/std as lists of floats.

    Raises a one-line `CheckpointError` naming ``where`` (the file that records it), the field and its value.
    """
    out = {}
    for key, value in arch.items():
        problem = _field_problem(key, value)
        if problem:
            raise CheckpointError(f"{where} says {key} {value!r:.60}: {problem}; {_fix(where)}")
        out[key] = [float(v) for v in value] if key in ("mean", "std") and value is not None else value
    return out


def resnet_stem_shape(state: dict) -> tuple[int, int] | None:
    """``(width, kernel)`` of a ResNet-layout state dict, read off ``conv1.weight`` (width, 3, k, k); None for other
    layouts. The width is the first stage's channels (64 in torchvision's), the kernel 7 (standard stem) or 3."""
    w = state.get("conv1.weight")
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or w.shape[1] != 3 or w.shape[2] != w.shape[3]:
        return None
    if "layer1.0.conv1.weight" not in state:
        return None
    return int(w.shape[0]), int(w.shape[2])


def _stem_kernel(stem: str) -> int:
    return 7 if stem == "standard" else 3


# torchvision's ResNets by (block, blocks per stage): the candidates for a state dict that names none.
_RESNETS: dict[tuple[str, tuple[int, ...]], tuple[str, ...]] = {
    ("basic", (2, 2, 2, 2)): ("resnet18",), ("basic", (3, 4, 6, 3)): ("resnet34",),
    ("bottleneck", (3, 4, 6, 3)): ("resnet50", "wide_resnet50_2", "resnext50_32x4d"),
    ("bottleneck", (3, 4, 23, 3)): ("resnet101", "wide_resnet101_2", "resnext101_32x8d", "resnext101_64x4d"),
    ("bottleneck", (3, 8, 36, 3)): ("resnet152",)}


def infer_resnet(state: dict, *, stem: str | None, width: int | None) -> str | None:
    """The torchvision ResNet whose keys and shapes ``state`` has exactly (the classifier aside), checked on the
    meta device; None when it is no ResNet of theirs."""
    blocks = tuple(len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")}) for i in (1, 2, 3, 4))
    kind = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
    for name in _RESNETS.get((kind, blocks), ()):
        with torch.device("meta"):
            net = create_backbone(name, stem=stem or "standard", width=width)
        if not _mismatch(net, state):
            return name
    return None


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
            return _with_arch(BackboneSource(part, f"{origin} ({fmt}, keys {prefix}*)"), arch_from_config(config),
                              f"{origin}'s config")
    return _with_arch(BackboneSource(_strip_module(tensors), f"{origin} (plain state dict)"),
                      arch_from_config(config), f"{origin}'s config")


def _with_arch(src: BackboneSource, arch: dict, where: str, *, under: bool = False) -> BackboneSource:
    """``src`` with the fields of ``arch`` (checked, read from ``where``); ``under``: only those it lacks."""
    checked = check_arch_fields(arch, where)
    for key, value in checked.items():
        if under and key in src.arch:
            continue
        src.arch[key] = value
        src.arch_from[key] = where
    return src


def _strip_module(state: dict) -> dict:
    if state and all(k.startswith("module.") for k in state):
        return _strip(state, "module.")
    return state


def load_backbone_state(source: str | os.PathLike) -> BackboneSource:
    """A backbone state dict from a run folder, a file of any supported format, or torchvision weights.

    The architecture the source records is checked against its tensors before it is returned (nothing is built
    but on the meta device); a ResNet's width and stem that it does not record are read off ``conv1.weight``.
    """
    text = str(source)
    if text.startswith("torchvision:"):
        return _torchvision_source(text)
    src = _read_source(Path(source).expanduser())
    return settle_arch(src)


def _torchvision_source(text: str) -> BackboneSource:
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


def _read_source(path: Path) -> BackboneSource:
    """The tensors and recorded architecture of a run folder or weights file (fields checked, not yet settled)."""
    if path.is_dir():
        cfg = None
        if (path / "config.yaml").is_file():
            cfg = read_run_config(path / "config.yaml")
        for name in (BACKBONE_NAME, SAFETENSORS_NAME, CHECKPOINT_NAME):
            if (path / name).is_file():
                src = _read_source(path / name)
                return _with_arch(src, arch_from_config(cfg), str(path / "config.yaml"), under=True)
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
        config = path.parent / "config.yaml"
        _with_arch(src, arch_from_config(read_run_config(config)), str(config))
    src.sha256 = file_sha256(path)
    return src


def settle_arch(src: BackboneSource) -> BackboneSource:
    """Check what ``src`` records against its tensors, and fill in what the tensors say and it does not.

    A ResNet's recorded width and stem must match ``conv1.weight``; a recorded backbone name must take the tensors
    (strict on its keys and shapes, the classifier aside), checked on the meta device. Raises a one-line
    `CheckpointError` naming the file, what it records and what its tensors say.
    """
    arch, where = src.arch, src.arch_from
    name = arch.get("backbone")
    shape = resnet_stem_shape(src.state)
    if shape is not None and not (name or "").startswith(TIMM_PREFIX):
        width, kernel = shape
        conv1 = tuple(src.state["conv1.weight"].shape)
        if arch.get("width") is not None and arch["width"] != width:
            raise CheckpointError(f"{where['width']} says width {arch['width']}, but {src.origin} holds tensors of "
                                  f"width {width} (conv1.weight {conv1}); {_fix(where['width'])}")
        if arch.get("stem") is not None and _stem_kernel(arch["stem"]) != kernel:
            k = _stem_kernel(arch["stem"])
            raise CheckpointError(f"{where['stem']} says stem {arch['stem']} (a {k}x{k} conv1), but {src.origin} holds "
                                  f"a {kernel}x{kernel} conv1 (conv1.weight {conv1}); {_fix(where['stem'])}")
        if arch.get("width") is None and width != 64:  # 64: torchvision's own width, built without --width
            arch["width"], where["width"] = width, "tensors"
        if arch.get("stem") is None and kernel in (3, 7):  # small-pool has small's tensors: only a record tells
            arch["stem"], where["stem"] = ("standard" if kernel == 7 else "small"), "tensors"
    if not name and shape is not None:
        name = infer_resnet(src.state, stem=arch.get("stem"), width=arch.get("width"))
        if name:
            arch["backbone"], where["backbone"] = name, "tensors"
            return src  # checked while inferred
    if name:
        recorded = sorted({where[k] for k in ("backbone", "stem", "width") if where.get(k) not in (None, "tensors")})
        check_fits(src, name, stem=arch.get("stem"), width=arch.get("width"),
                   recorded=", ".join(recorded) or "its architecture")
    return src


def resolve_arch(src: BackboneSource, *, backbone: str | None = None, stem: str | None = None,
                 width: int | None = None) -> dict:
    """The architecture to build for ``src``: explicit arguments win over what it records (default resnet50).

    Checks on the meta device (nothing allocated) that the tensors load into it; a `CheckpointError` names the
    missing, unexpected or mis-shaped keys. Width and stem read off the tensors are left out for a timm model.
    """
    arch = dict(src.arch)
    for key, value in (("backbone", backbone), ("stem", stem), ("width", width)):
        if value is not None:
            arch[key] = value
    arch["backbone"] = name = arch.get("backbone") or "resnet50"
    if name.startswith(TIMM_PREFIX):
        for key in ("stem", "width"):
            if src.arch_from.get(key) == "tensors" and arch.get(key) == src.arch.get(key):
                arch.pop(key)
    check_fits(src, name, stem=arch.get("stem"), width=arch.get("width"))
    return arch


def check_fits(src: BackboneSource, name: str, *, stem: str | None = None, width: int | None = None,
               recorded: str | None = None) -> None:
    """Raise a one-line `CheckpointError` unless ``src``'s tensors load into backbone ``name`` (strict on its keys
    and shapes, its classifier aside). The network is built on the meta device: no memory, no initialisation.

    ``recorded``: where the architecture was read, when it comes from the source rather than from arguments.
    """
    try:
        with torch.device("meta"):
            net = create_backbone(name, stem=stem or "standard", width=width)
    except ConfigError as e:
        if recorded is None:
            raise
        raise CheckpointError(f"{recorded} records an architecture that cannot be built ({e})") from None
    parts = _mismatch(net, src.state)
    if not parts:
        return
    if recorded is None:
        raise CheckpointError(f"{src.origin} does not match backbone {type(net).__name__} "
                              f"({_describe(name, stem, width)}): {', '.join(parts)}; "
                              + ARGS_HINT)
    raise CheckpointError(f"{src.origin} does not match {_describe(name, stem, width)} (as {recorded} says): "
                          f"{', '.join(parts)}; correct or delete those fields")


def _describe(name: str, stem: str | None, width: int | None) -> str:
    return name + (f" stem {stem}" if stem else "") + (f" width {width}" if width is not None else "")


def _mismatch(backbone: nn.Module, state: dict) -> list[str]:
    """What keeps ``state`` from loading strictly into ``backbone`` (its classifier aside): [] when nothing."""
    own = backbone.state_dict()
    head = getattr(backbone, "head_name", "fc")
    state = {k: v for k, v in state.items() if not k.startswith(head + ".")}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} with other shapes (e.g. {'; '.join(shapes[:2])})")
    return parts


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
    where = f"{path}'s metadata"
    try:
        arch = json.loads(meta.get("barlowtwins.arch", "{}"))
    except (json.JSONDecodeError, RecursionError):
        raise CheckpointError(f"{where} barlowtwins.arch is not JSON; save the backbone again") from None
    if not isinstance(arch, dict):
        raise CheckpointError(f"{where} barlowtwins.arch is not a mapping of architecture fields; save it again")
    if not state:
        raise CheckpointError(f"{path} holds no tensors; expected a backbone state dict")
    return _with_arch(BackboneSource(_strip_module(state), f"{path} (safetensors)"), arch_from_config(arch), where)


def load_backbone_weights(backbone: nn.Module, src: BackboneSource) -> list[str]:
    """Load ``src`` into ``backbone`` strictly (the classifier head aside); return the loaded key names.

    Raises a `CheckpointError` naming the missing, unexpected or mis-shaped keys.
    """
    head = getattr(backbone, "head_name", "fc")
    parts = _mismatch(backbone, src.state)
    if parts:
        raise CheckpointError(f"{src.origin} does not match backbone {type(backbone).__name__}: "
                              f"{', '.join(parts)}; " + ARGS_HINT)
    state = {k: v for k, v in src.state.items() if not k.startswith(head + ".")}
    backbone.load_state_dict(state, strict=True)
    return list(state)
