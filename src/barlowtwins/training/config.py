"""Pretraining configuration: a preset YAML, then an optional user YAML, then command-line flags.

Every field of `PretrainConfig` is a flag (``batch_size`` -> ``--batch-size``). In Python a preset is a field
too: ``PretrainConfig(preset="cifar10", epochs=100)`` takes the preset's values for every field not given, as
``--preset cifar10 --epochs 100`` does. The resolved config is saved as ``config.yaml`` in the run folder (with
the augmentation values the run derived from the image size, `save_config`) and inside every checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path

import yaml

from barlowtwins.data.datasets import DATASETS
from barlowtwins.data.pipeline import data_path_choices, data_path_help
from barlowtwins.errors import ConfigError
from barlowtwins.models.backbones import MAX_IMAGE_SIZE, MAX_WIDTH, STEMS, check_backbone_name
from barlowtwins.models.loss import TERMS
from barlowtwins.models.projector import parse_projector_spec
from barlowtwins.runtime.files import write_text_atomic
from barlowtwins.runtime.hardware import PRECISION_HELP
from barlowtwins.training import fields as config_fields
from barlowtwins.training.fields import (  # noqa: F401  (re-exported: the names users import from here)
    MAX_YAML_ALIASES,
    MAX_YAML_CHARS,
    choice_values,
    class_doc,
    coerce,
    field_types,
    flag,
    opt,
    parse_yaml,
    short,
    validate_config,
)
from barlowtwins.training.optim import OPTIMIZERS
from barlowtwins.transforms.multicrop import MIN_SIZE as MULTICROP_MIN_SIZE
from barlowtwins.transforms.multicrop import check_multicrop
from barlowtwins.transforms.progressive import check_progressive_epochs
from barlowtwins.transforms.spec import CLI_SETTINGS, SPEC, augment_config

# Allowed values of each choice field, read from the registries of the code that implements them.
CHOICES = {
    "dataset": lambda: tuple(DATASETS),
    "data_path": data_path_choices,
    "stem": lambda: tuple(STEMS),
    "loss_terms": lambda: tuple(TERMS),
    "optimizer": lambda: tuple(OPTIMIZERS),
}


def _choices(name: str):
    """Allowed values of a choice field, looked up when validating (so an entry registered later counts)."""
    lookup = CHOICES[name]
    return lambda: tuple(lookup())


def _projector_ok(value: str) -> None:
    parse_projector_spec(value)


def _backbone_ok(value: str) -> None:
    check_backbone_name(value)


def _device_ok(value: str) -> str | None:
    if value in ("auto", "cuda", "mps", "cpu") or (value.startswith("cuda:") and value[5:].isdigit()):
        return None
    return "auto, cuda, cuda:<index>, mps or cpu"


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run; each field is also a flag (``batch_size`` -> ``--batch-size``).

    Types and allowed values are declared per field (`opt`) and checked on construction (`validate_config`),
    so a bad value fails with one line before any work starts.

    ``preset`` names a preset (``imagenet``, ``cifar10``, ``fashion-mnist``: the YAML files of
    ``barlowtwins.configs``): its values fill every field the constructor was not given, so
    ``PretrainConfig(preset="cifar10", epochs=100)`` is ``--preset cifar10 --epochs 100``. A config made from
    another one or from a full mapping (``dataclasses.replace``, `config_from_dict`, a saved ``config.yaml`` read
    back) keeps its values: the preset is applied once, where it is named.
    `explicit_fields` tells which fields a config was set (given, or not at their default: what
    `barlowtwins.pretrain` leaves alone when it fits the rest to the data).
    """

    # Data
    dataset: str = opt("folder", "training data: a built-in data set, 'folder' (<data-dir>/<split>/<class>/*), "
                                 "'images' (every image under --data-dir, no labels), 'webdataset' (tar shards: "
                                 "a folder, a pattern such as 'shards/train-{000000..000099}.tar' or a list file) "
                                 "or 'hf' (a Hugging Face save_to_disk folder or Parquet files)",
                       choices=_choices("dataset"))
    data_dir: str | None = opt(None, "folder holding the images or the built-in data set's files (webdataset: the "
                                     "shards)")
    image_column: str | None = opt(None, "--dataset hf: the column of the images (default: the Image feature, or "
                                         "the first binary column)")
    label_column: str | None = opt(None, "--dataset hf: the column of the labels (default: the ClassLabel column, "
                                         "or one named label)")
    split: str = opt("train", "the split (sub-folder for 'folder') to pretrain on")
    download: bool = opt(False, "let torchvision download CIFAR/STL-10 (needs internet)")
    image_size: int = opt(224, "side in pixels of the square crops the network sees", ge=8, le=MAX_IMAGE_SIZE,
                          why="smaller crops leave nothing for the network's strides")
    workers: int | None = opt(None, "data-loader processes for image folders (default: from the CPU count)", ge=0)
    data_path: str = opt("auto", "where views are made for image folders", choices=_choices("data_path"),
                         describe=data_path_help)
    strict_data: bool = opt(False, "decode every file before training and stop on any unreadable one (default: "
                                   "skip it with a warning)")
    # Network
    backbone: str = opt("resnet50", "backbone: a torchvision model name (resnet18, resnet50, ...) or timm:<name>",
                        check=_backbone_ok)
    stem: str = opt("standard", "ResNet stem: standard (ImageNet), small (3x3 stride 1, no max-pool, for 32 px) "
                                "or small-pool", choices=_choices("stem"))
    width: int | None = opt(None, "channels of a ResNet's first stage (torchvision's 64; narrower for CPU runs)",
                            ge=1, le=MAX_WIDTH)
    zero_init_residual: bool = opt(True, "start every residual branch's last BatchNorm at zero")
    projector: str = opt("8192-8192-8192", "projector layer sizes joined by '-' (the paper's 8192-8192-8192)",
                         check=_projector_ok)
    projector_bn: bool = opt(True, "BatchNorm between the projector's linear layers")
    # Loss
    lambd: float = opt(0.0051, "weight of the off-diagonal (redundancy) term of the loss", ge=0)
    loss_terms: str = opt("both", "loss terms to use: both, or on-diagonal/off-diagonal only (ablations)",
                          choices=_choices("loss_terms"))
    mix_weight: float = opt(0.0, "Mixed Barlow Twins: weight of the mixed-input regulariser, times lambd (0: off, "
                                 "the paper's recipe; the reference code uses 4 on CIFAR, 0.5 on ImageNet)", ge=0)
    mix_beta: float = opt(1.0, "Mixed Barlow Twins: the mixing weight is drawn from Beta(a, a) with this a", gt=0)
    mix_block: int = opt(64, "Mixed Barlow Twins: images are mixed with partners within blocks of this many "
                             "samples of the batch (a per-process batch that is a multiple keeps W processes "
                             "equal to one)", ge=2)
    # Optimisation (paper: LARS, lr x batch/256, 10 warm-up epochs, cosine to 1/1000)
    optimizer: str = opt("lars", "optimiser: lars (the paper's) or adamw", choices=_choices("optimizer"))
    epochs: int = opt(1000, "length of the schedule in passes over the data (an upper bound under a time budget)",
                      ge=1)
    batch_size: int = opt(2048, "global batch size, divided over all processes", ge=2,
                          why="the loss standardises every dimension over the batch, which needs at least 2 samples")
    lr_weights: float = opt(0.2, "base learning rate of the weights per 256 samples", gt=0)
    lr_biases: float = opt(0.0048, "base learning rate of biases and BatchNorm parameters per 256 samples", gt=0)
    weight_decay: float = opt(1.5e-6, "weight decay of the weights (biases and norms take none)", ge=0)
    momentum: float = opt(0.9, "LARS momentum (AdamW's beta1)", ge=0, lt=1)
    eta: float = opt(0.001, "LARS trust coefficient: caps each layer's relative change per step", gt=0)
    warmup_epochs: float = opt(10, "epochs of linear learning-rate warm-up before the cosine decay", ge=0)
    final_lr_ratio: float = opt(0.001, "learning rate at the end of the cosine as a share of the peak", ge=0, le=1)
    progressive_start: int = opt(0, "progressive resolution: the view size of the first epoch in pixels, a multiple "
                                    "of 4 (of 8 above 64-px images), growing linearly to --image-size over "
                                    "--progressive-epochs (0: off, the paper's recipe)",
                                 ge=0, le=MAX_IMAGE_SIZE)
    progressive_epochs: float = opt(0.0, "progressive resolution: epochs from the start size to the full size (set "
                                         "with --progressive-start)", ge=0)
    multicrop_count: int = opt(0, "multi-crop: small crops per image besides the two views, each compared with both "
                                  "views (0: off, the paper's recipe; SwAV uses 6)", ge=0, le=16)
    multicrop_size: int = opt(0, f"multi-crop: side of the small crops in pixels, at least {MULTICROP_MIN_SIZE} and "
                                 "smaller than --image-size (0: 3/7 of --image-size, SwAV's 96 of 224)", ge=0,
                              le=MAX_IMAGE_SIZE)
    multicrop_scale: tuple[float, float] | None = opt(None, "multi-crop: smallest and largest area of a small crop as "
                                                            "shares of the image (default: SwAV's 0.05 0.14; 0.14 0.5 "
                                                            "at 64 px and below)", gt=0, le=1, ordered=True)
    multicrop_weight: float = opt(1.0, "multi-crop: weight of the small crops' mean loss term against the two "
                                       "views' loss", ge=0)
    # Augmentation: None = the paper's value adapted to image size and channels (augment.augment_config)
    crop_scale: tuple[float, float] | None = opt(None, "smallest and largest crop area as shares of the image",
                                                 gt=0, le=1, ordered=True)
    hflip_p: float | None = opt(None, "probability of a horizontal flip", ge=0, le=1)
    jitter_p: float | None = opt(None, "probability of colour jitter", ge=0, le=1)
    brightness: float | None = opt(None, "colour-jitter brightness strength", ge=0)
    contrast: float | None = opt(None, "colour-jitter contrast strength", ge=0)
    saturation: float | None = opt(None, "colour-jitter saturation strength", ge=0)
    hue: float | None = opt(None, "colour-jitter hue shift, as a share of the colour circle", ge=0, le=0.5)
    grayscale_p: float | None = opt(None, "probability of converting a view to grayscale", ge=0, le=1)
    blur_p: tuple[float, float] | None = opt(None, "Gaussian-blur probability of view 1 and view 2", ge=0, le=1)
    blur_sigma: tuple[float, float] | None = opt(None, "smallest and largest Gaussian-blur sigma in pixels", gt=0,
                                                 ordered=True)
    solarize_p: tuple[float, float] | None = opt(None, "solarisation probability of view 1 and view 2", ge=0, le=1)
    interpolation: str | None = opt(None, "resampling of the random crops", choices=("bicubic", "bilinear", "nearest"))
    mean: tuple[float, float, float] | None = opt(None, "per-channel normalisation mean (RGB, 0-1 scale)")
    std: tuple[float, float, float] | None = opt(None, "per-channel normalisation standard deviation (RGB, 0-1 scale)",
                                                 gt=0, why="the input is divided by it")
    # Hardware and run
    device: str = opt("auto", "where to train: auto, cuda, cuda:<index>, mps or cpu", check=_device_ok)
    precision: str = opt("auto", "arithmetic: " + PRECISION_HELP,
                         choices=("auto", "fp32", "bf16"))
    channels_last: bool = opt(True, "channels-last memory format (faster convolutions on GPUs)")
    compile: bool = opt(False, "compile the network with torch.compile")
    sync_bn: bool = opt(True, "synchronise BatchNorm statistics over all processes (the paper's setting)")
    grad_compression: str = opt("none", "DDP gradient communication: none or bf16 (half the traffic)",
                                choices=("none", "bf16"))
    seed: int = opt(0, "seed of the initial weights, the data order and the augmentations", ge=0, le=2**32 - 1)
    out: str = opt("runs/pretrain", "run folder: config, metrics, checkpoints and backbone.pth; rerun to resume",
                   check=lambda v: None if v.strip() else "a non-empty folder path")
    checkpoint_minutes: float = opt(10.0, "minutes between checkpoints (also written at the end and on a stop)",
                                    ge=0)
    accept_data_change: bool = opt(False, "resume even though the data set changed since the checkpoint (other "
                                          "files, count or order): the steps then index other images")
    keep_checkpoints: int = opt(2, "how many of the newest checkpoints to keep (an older one is used if the newest "
                                   "is damaged)", ge=1)
    log_every: int = opt(20, "steps between two lines of metrics.jsonl (and loss checks); a short run logs more often, "
                            "so that its curves have at least 30 points", ge=1)
    max_steps: int | None = opt(None, "stop (with a checkpoint) at this step of the schedule, on every run", ge=1)
    time_limit_minutes: float | None = opt(None, "stop (with a checkpoint) after this many minutes of this process",
                                           gt=0)
    time_budget_minutes: float | None = opt(None, "fit the whole schedule (warm-up + cosine) into this many minutes "
                                                  "over all resumes; 0 turns a preset's budget off", ge=0)
    progress: bool = opt(True, "show a progress bar")
    progress_seconds: float = opt(30.0, "without a terminal (log file, SLURM, CI): seconds between plain progress "
                                        "lines (0: every step)", ge=0)
    tensorboard: bool = opt(False, "also write TensorBoard scalars and C heat maps to <out>/tensorboard")
    correlation_dims: int = opt(64, "side of the C[:k, :k] snapshots saved to <out>/correlation.jsonl for "
                                    "'barlowtwins report' (0: off)", ge=0)
    # Online kNN monitor (0 = off): labelled data for it, evaluated every N epochs
    knn_every: int = opt(0, "evaluate a kNN classifier every this many epochs (0: never)", ge=0)
    knn_dataset: str | None = opt(None, "labelled data set of the kNN monitor (default: the training one)",
                                  choices=_choices("dataset"))
    knn_data_dir: str | None = opt(None, "folder of the kNN monitor's data (default: --data-dir)")
    knn_train_split: str = opt("train", "split the kNN monitor takes its memory bank from")
    knn_val_split: str | None = opt(None, "split the kNN monitor classifies (default: test, or val for folders)")
    knn_max_samples: int | None = opt(10000, "at most this many images of each kNN split (for speed)", ge=1)
    preset: str | None = opt(None, "the preset this config started from; in Python, PretrainConfig(preset=NAME) "
                                   "takes the preset's values for every field not given (as --preset NAME does)")

    def __post_init__(self):
        apply_preset(self)
        validate_config(self)
        # the settings that only make sense together, before any work (a start checked against --image-size by
        # check_progressive_start, where the trainer knows the size it trains at)
        check_progressive_epochs(self.progressive_start, self.progressive_epochs)
        check_multicrop(self.multicrop_count, self.multicrop_size, self.image_size)

    def augment_overrides(self) -> dict:
        """The augmentation settings set here (the spec's `CLI_SETTINGS`), for `augment_config`."""
        return {n: getattr(self, n) for n in CLI_SETTINGS if getattr(self, n) is not None}

    def to_dict(self) -> dict:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}


def _recording_given(cls):
    """Wrap the dataclass ``__init__`` so that a config records the names of the fields it was given (`explicit_fields`,
    `apply_preset`); ``dataclasses.replace`` passes every field, so a copy counts them all as given."""
    init = cls.__init__
    names = [f.name for f in fields(cls) if f.init]

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        self.__dict__["_given"] = frozenset(names[:len(args)]).union(kwargs)
        init(self, *args, **kwargs)

    cls.__init__ = __init__
    return cls


_recording_given(PretrainConfig)


def explicit_fields(cfg) -> set[str]:
    """The fields of ``cfg`` that were set: those holding a value other than their default, and those given to its
    constructor. A copy (``dataclasses.replace``, `config_from_dict`: every field passed) only tells the first kind:
    a field given at its default value there counts as unset."""
    given = set(cfg.__dict__.get("_given", ()))
    if len(given) == len(fields(cfg)):  # a copy passes every field: which were set is not known from it
        given = set()
    for f in fields(cfg):
        if f.default is not dataclasses.MISSING and getattr(cfg, f.name) != f.default:
            given.add(f.name)
    return given


def apply_preset(cfg) -> None:
    """Fill the fields ``cfg`` was not given with the values of its ``preset`` (nothing without a preset, or for a
    config that was given every field: a copy, a saved config read back). An unknown preset is one line."""
    if cfg.preset is None:
        return
    given = cfg.__dict__.get("_given")
    if given is None:
        return
    missing = [f.name for f in fields(cfg) if f.name not in given]
    if not missing:
        return
    values = preset_values(cfg.preset)
    valid = {f.name for f in fields(cfg)}
    unknown = sorted(str(k) for k in values if k not in valid)
    if unknown:
        raise ConfigError(f"preset {cfg.preset} has an unknown field '{unknown[0]}'")
    for name in missing:
        if name in values:
            setattr(cfg, name, coerce(type(cfg), name, values[name]))


PRESETS_PACKAGE = "barlowtwins.configs"


def available_presets() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(PRESETS_PACKAGE).iterdir() if p.name.endswith(".yaml"))


def preset_values(name: str) -> dict:
    if name not in available_presets():
        raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(available_presets())}")
    text = resources.files(PRESETS_PACKAGE).joinpath(f"{name}.yaml").read_text()
    return parse_yaml(text, f"preset {name}")


def _words(v) -> str:
    if isinstance(v, tuple):
        return ", ".join(_words(x) for x in v)
    return f"{v:g}" if isinstance(v, float) else str(v)


def _derived_words(name: str) -> str | None:
    """`derived_default` for the augmentation fields (their None means: derived by the run), None for the rest."""
    return derived_default(name) if name in CLI_SETTINGS else None


def derived_default(name: str) -> str:
    """An augmentation field's default in words: the paper's value, adapted to the image size and channels."""
    s = SPEC.setting(name)
    text = f"from the image size: {_words(s.default)}"
    if s.small is not None:
        text += f"; {_words(s.small)} at 32 px and below"
    if s.mono is not None:
        text += f"; {_words(s.mono)} for 1-channel images"
    return text


def config_from_dict(values: dict, cls=PretrainConfig, base=None):
    """Apply ``values`` onto ``base`` (default: the dataclass defaults) with type checks.

    The values are taken as they are: a ``preset`` among them is a label (a saved config read back keeps what it
    trained with); `resolve_values` merges a preset's values first, as ``barlowtwins pretrain`` does."""
    return config_fields.config_from_dict(values, cls, base)


def add_config_flags(parser: argparse.ArgumentParser, cls=PretrainConfig, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of ``cls`` (default `PretrainConfig`); an augmentation field's help gives its default in
    words (`derived_default`). Every default is None so that only flags the user gave override the YAML."""
    config_fields.add_config_flags(parser, cls, skip, derived=_derived_words)


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
        except UnicodeDecodeError:
            raise ConfigError(f"cannot read config file {config_file}: it is not a text (YAML) file") from None
        values.update(parse_yaml(text, f"config file {config_file}"))
    values.update({k: v for k, v in flags.items() if v is not None})
    return values


def config_channels(cfg) -> int:
    """The channel count the run's views are made for: its data set's (`DatasetSpec.channels`: 1 for the built-in
    grayscale ones; files and tables are read as RGB), 3 for a name the registry does not know."""
    return DATASETS[cfg.dataset].channels if cfg.dataset in DATASETS else 3


def derived_augmentation(cfg, channels: int | None = None) -> dict:
    """The augmentation fields ``cfg`` leaves unset (None), each with the value the run uses: the paper's,
    adapted to the image size and channel count (`augment_config`); lists for pairs, as YAML writes them."""
    channels = config_channels(cfg) if channels is None else channels
    aug = augment_config(cfg.image_size, channels, **cfg.augment_overrides())
    out = {}
    for name in CLI_SETTINGS:
        if getattr(cfg, name) is None:
            value = getattr(aug, name)
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def resolved_dict(cfg, channels: int | None = None) -> dict:
    """``cfg.to_dict()`` with every augmentation field resolved to the value the run uses (`derived_augmentation`):
    what ``config.yaml`` holds, valid input for ``--config`` (and a resume from it) that trains the same views."""
    values = cfg.to_dict()
    values.update(derived_augmentation(cfg, channels))
    return values


def save_config(cfg, path: Path, channels: int | None = None, notes: Mapping[str, str] | None = None) -> None:
    """Write the resolved config as YAML (`resolved_dict`: the augmentation values that ran, not ``null``),
    atomically (a kill mid-write leaves the previous file). ``channels``: the data's (default `config_channels`).
    ``notes``: a comment after a field's line (``precision: auto  # ran bf16 autocast (...)``): what the run made
    of a setting, for the reader, while the value stays what was asked (a config read back asks the same)."""
    lines = yaml.safe_dump(resolved_dict(cfg, channels), sort_keys=False).splitlines()
    for name, note in (notes or {}).items():
        i = next((i for i, line in enumerate(lines) if line.startswith(f"{name}: ")), None)
        if i is not None:
            lines[i] += "  # " + " ".join(str(note).split())
    write_text_atomic(path, "\n".join(lines) + "\n")


PretrainConfig.__doc__ = class_doc(PretrainConfig, derived=_derived_words)

