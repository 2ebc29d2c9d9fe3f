"""Defaults that fit the data when no preset is given.

The config's defaults are the paper's ImageNet recipe (224 px, projector 8192-8192-8192, batch 2048). Taken
silently for small images they cost a lot for nothing: a ResNet-18 on 32-px images with that projector needs
3.7 GB and writes a 1.2 GB checkpoint, about 8x slower than a fitting projector. With no preset,
:func:`fit_to_data` adapts what the user did not set:

* a built-in data set of known size (Fashion-MNIST 28 px, CIFAR 32 px, STL-10 96 px) is trained at that size
  instead of being upscaled to 224 px;
* on small images (64 px or less): the small-image stem for ResNets (``small`` up to 32 px, ``small-pool`` up to
  64 px), a projector of three layers of 4x the backbone's feature width (512 to 2048: 2048 for a ResNet-18 or
  ResNet-50, as in the usual CIFAR settings), and batch 256 (the ``cifar10`` preset's).

Every field set by a preset, a YAML file or a flag is kept as it is. The returned note, printed as the first line
of ``barlowtwins pretrain``, says what was chosen.
"""

from __future__ import annotations

import dataclasses

import torch

from barlowtwins.models.backbones import create_backbone
from barlowtwins.training.config import PretrainConfig

NATIVE_SIZES = {"fashion-mnist": 28, "cifar10": 32, "cifar100": 32, "stl10": 96}
SMALL_IMAGES = 64  # px: at or below, the ImageNet projector and batch do not fit
SMALL_BATCH = 256
MATCHING_PRESETS = {"fashion-mnist": "fashion-mnist", "cifar10": "cifar10"}


def small_projector(num_features: int) -> str:
    """Three layers of 4x the feature width, as a power of two clamped to 512..2048."""
    width = 1 << max(0, (4 * num_features - 1).bit_length())
    width = min(2048, max(512, width))
    return f"{width}-{width}-{width}"


def _num_features(cfg: PretrainConfig) -> int:
    with torch.device("meta"):  # the architecture only: no memory, no initialisation cost
        return int(create_backbone(cfg.backbone, stem=cfg.stem, width=cfg.width).num_features)


def fit_to_data(cfg: PretrainConfig, explicit: set[str]) -> tuple[PretrainConfig, str | None]:
    """``cfg`` with the fields the user did not set (not in ``explicit``) fitted to the image size.

    Returns the new config and a one-line note for the user (None when a preset was given: the preset decides).
    """
    if cfg.preset or "preset" in explicit:
        return cfg, None
    changes: dict = {}
    native = NATIVE_SIZES.get(cfg.dataset)
    if native is not None and "image_size" not in explicit and cfg.image_size != native:
        changes["image_size"] = native
    size = changes.get("image_size", cfg.image_size)
    if size <= SMALL_IMAGES:
        is_resnet = cfg.backbone.startswith(("resnet", "wide_resnet", "resnext"))
        if is_resnet and "stem" not in explicit and cfg.stem == "standard":
            changes["stem"] = "small" if size <= 32 else "small-pool"
        if "projector" not in explicit:
            changes["projector"] = small_projector(_num_features(dataclasses.replace(cfg, **changes)))
        if "batch_size" not in explicit:
            changes["batch_size"] = SMALL_BATCH
    new = dataclasses.replace(cfg, **changes)
    return new, _note(new, changes, size)


def _note(cfg: PretrainConfig, changes: dict, size: int) -> str:
    recipe = f"{cfg.backbone}, {size} px, stem {cfg.stem}, projector {cfg.projector}, batch {cfg.batch_size}"
    preset = MATCHING_PRESETS.get(cfg.dataset)
    hint = f"; --preset {preset} is the tuned recipe for this data" if preset else ""
    if size > SMALL_IMAGES:
        what = "the paper's ImageNet recipe" if (cfg.projector, cfg.batch_size) == ("8192-8192-8192", 2048) \
            else "your settings"
        return f"no preset: {what} ({recipe}){hint}"
    if not changes:
        return f"no preset: small images, your settings ({recipe}){hint}"
    chosen = ", ".join("--" + k.replace("_", "-") for k in changes)
    return f"no preset: small images, not the ImageNet recipe: {recipe} (chosen: {chosen}; flags override){hint}"
