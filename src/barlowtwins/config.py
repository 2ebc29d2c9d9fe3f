"""Pretraining configuration: a preset YAML, then an optional user YAML, then command-line flags.

Every field of `PretrainConfig` is a flag (``batch_size`` -> ``--batch-size``). The fully resolved config is
saved as ``config.yaml`` in the run folder and inside every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import yaml

from .errors import ConfigError


@dataclass
class PretrainConfig:
    # Data
    dataset: str = "folder"  # fashion-mnist | cifar10 | cifar100 | stl10 | folder | images
    data_dir: str | None = None
    split: str = "train"
    download: bool = False  # let torchvision download CIFAR/STL-10 (needs internet)
    image_size: int = 224
    workers: int | None = None  # data-loader processes for folders (default: per CPU count)
    data_path: str = "auto"  # auto | cpu (views made in loader workers) | device (JPEG decode + views on the GPU)
    strict_data: bool = False  # decode every file before training; any unreadable one is an error (default: skip it)
    # Network
    backbone: str = "resnet50"
    stem: str = "standard"  # standard | small (3x3 stride 1, no max-pool) | small-pool
    width: int | None = None  # ResNet first-stage width (torchvision: 64)
    zero_init_residual: bool = True
    projector: str = "8192-8192-8192"
    projector_bn: bool = True
    # Loss
    lambd: float = 0.0051
    loss_terms: str = "both"  # both | on-diagonal | off-diagonal (ablations)
    # Optimisation (paper: LARS, lr x batch/256, 10 warm-up epochs, cosine to 1/1000)
    optimizer: str = "lars"  # lars (the paper) | adamw
    epochs: int = 1000
    batch_size: int = 2048  # global: divided over ranks
    lr_weights: float = 0.2
    lr_biases: float = 0.0048
    weight_decay: float = 1.5e-6
    momentum: float = 0.9  # LARS momentum; AdamW's beta1
    eta: float = 0.001  # LARS trust coefficient
    warmup_epochs: float = 10
    final_lr_ratio: float = 0.001
    # Augmentation: None = the paper's value adapted to image size and channels (augment.augment_config)
    crop_scale: tuple[float, float] | None = None
    hflip_p: float | None = None
    jitter_p: float | None = None
    brightness: float | None = None
    contrast: float | None = None
    saturation: float | None = None
    hue: float | None = None
    grayscale_p: float | None = None
    blur_p: tuple[float, float] | None = None
    blur_sigma: tuple[float, float] | None = None
    solarize_p: tuple[float, float] | None = None
    interpolation: str | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    # Hardware and run
    device: str = "auto"  # auto | cuda | mps | cpu
    precision: str = "auto"  # auto (bf16 on CUDA when supported) | fp32 | bf16
    channels_last: bool = True
    compile: bool = False  # torch.compile the network
    sync_bn: bool = True  # SyncBatchNorm under torch.distributed (the paper's setting)
    grad_compression: str = "none"  # none | bf16 (DDP communication hook)
    seed: int = 0
    out: str = "runs/pretrain"
    checkpoint_minutes: float = 10.0
    log_every: int = 20
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    time_limit_minutes: float | None = None  # stop (with a checkpoint) after this much wall-clock time
    time_budget_minutes: float | None = None  # fit the whole schedule (warm-up + cosine) into this time; 0: off
    progress: bool = True
    progress_seconds: float = 30.0  # without a terminal (log file, SLURM, CI): one plain progress line this often
    tensorboard: bool = False  # also write TensorBoard scalars and C heat maps to <out>/tensorboard
    correlation_dims: int = 64  # C[:k, :k] snapshots in <out>/correlation.jsonl for `barlowtwins report`; 0: off
    # Online kNN monitor (0 = off): labelled data for it, evaluated every N epochs
    knn_every: int = 0
    knn_dataset: str | None = None
    knn_data_dir: str | None = None
    knn_train_split: str = "train"
    knn_val_split: str | None = None  # default: test for built-in data sets, val for folders
    knn_max_samples: int | None = 10000
    preset: str | None = None

    def augment_overrides(self) -> dict:
        names = ("crop_scale", "hflip_p", "jitter_p", "brightness", "contrast", "saturation", "hue",
                 "grayscale_p", "blur_p", "blur_sigma", "solarize_p", "interpolation", "mean", "std")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


PRESETS_PACKAGE = "barlowtwins.configs"


def available_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(PRESETS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def parse_yaml(text: str, what: str) -> dict:
    """A YAML mapping, with a one-line error naming ``what`` when it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read {what}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a mapping of field: value")
    return data


def preset_values(name: str) -> dict:
    if name not in available_presets():
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(available_presets())}")
    text = resources.files(PRESETS_PACKAGE).joinpath(f"{name}.yaml").read_text()
    return parse_yaml(text, f"preset {name}")


def _field_types(cls) -> dict[str, type]:
    return typing.get_type_hints(cls)


def _coerce(cls, name: str, value):
    """YAML value -> the field's type (tuples from lists), with a clear error on a mismatch."""
    hint = _field_types(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config field '{name}' cannot be empty")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    origin = typing.get_origin(base)
    try:
        if origin is tuple:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            elem = typing.get_args(base)
            if elem and elem[-1] is not Ellipsis and len(items) != len(elem):
                raise ValueError(f"expected {len(elem)} values")
            return tuple(float(v) for v in items)
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError("expected true or false")
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            return int(value)
        if base is float:
            return float(value)
        return str(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"config field '{name}': {value!r} is not valid ({e})") from None


def config_from_dict(values: dict, cls=PretrainConfig, base=None):
    """Apply ``values`` onto ``base`` (default: the dataclass defaults) with type checks."""
    valid = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - valid)
    if unknown:
        raise ConfigError(f"unknown config field(s) {', '.join(unknown)}; see 'barlowtwins pretrain --help'")
    cfg = base if base is not None else cls()
    return dataclasses.replace(cfg, **{k: _coerce(cls, k, v) for k, v in values.items()})


def add_config_flags(parser: argparse.ArgumentParser, cls=PretrainConfig, skip: tuple[str, ...] = ()) -> None:
    """One flag per field; every default is None so that only flags the user gave override the YAML."""
    group = parser.add_argument_group("config fields (override the preset and --config)")
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = _field_types(cls)[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if args else hint
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = f"(default: {default})"
        if base is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif typing.get_origin(base) is tuple:
            n = len(typing.get_args(base))
            group.add_argument(flag, dest=f.name, type=float, nargs=n, default=None, metavar="X", help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=str if base not in (int, float) else base, default=None,
                               help=help_text)


def resolve_config(preset: str | None, config_file: str | None, flags: dict, cls=PretrainConfig):
    """Preset YAML -> user YAML -> flags."""
    return config_from_dict(resolve_values(preset, config_file, flags), cls)


def resolve_values(preset: str | None, config_file: str | None, flags: dict) -> dict:
    """The field values the preset, the user YAML and the flags set (later ones win): the explicit settings."""
    values: dict = {}
    if preset:
        values.update(preset_values(preset))
        values["preset"] = preset
    if config_file:
        try:
            text = Path(config_file).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read config file {config_file}: {e.strerror}") from None
        values.update(parse_yaml(text, f"config file {config_file}"))
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def save_config(cfg, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

