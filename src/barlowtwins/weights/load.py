"""Load a pretrained backbone from any source into a ready torchvision/timm module."""

from __future__ import annotations

import os
from typing import cast

from torch import nn

from barlowtwins.models.backbones import create_backbone, set_submodule
from barlowtwins.runtime.log import get_logger
from barlowtwins.weights.sources import BackboneSource, load_backbone_state, load_backbone_weights, resolve_arch

log = get_logger(__name__)


def build_backbone(src: BackboneSource, *, backbone: str | None = None, stem: str | None = None,
                   width: int | None = None, num_classes: int | None = None) -> nn.Module:
    """The network ``src`` describes (explicit arguments win; default resnet50) with its weights, in eval mode.

    The tensors are checked against the architecture before the network is built (`resolve_arch`), so a source
    that does not fit is one `CheckpointError`, never a network built to the size some metadata claims.

    ``num_classes=None`` keeps the classifier as ``nn.Identity`` (the module returns (N, D) features);
    an integer puts a freshly initialised ``nn.Linear(D, num_classes)`` there (random init, for fine-tuning).
    """

    arch = resolve_arch(src, backbone=backbone, stem=stem, width=width)  # checked on the meta device first
    name = arch["backbone"]
    net = create_backbone(name, stem=arch.get("stem") or "standard", width=arch.get("width"))
    load_backbone_weights(net, src)
    if num_classes is not None:
        if hasattr(net, "reset_classifier"):  # timm
            # a timm model's method; torch types a module's undeclared attributes as Tensor | Module
            net.reset_classifier(num_classes)  # type: ignore[operator]
        else:
            # torch types a module's undeclared attributes as Tensor | Module; create_backbone sets a str and an int
            head_name, num_features = cast(str, net.head_name), cast(int, net.num_features)
            set_submodule(net, head_name, nn.Linear(num_features, num_classes))
    # the ignore: torch annotates nn.Module.__setattr__'s value as Tensor | Module, though it sets any value
    net.arch = {**arch, "backbone": name}  # type: ignore[assignment]
    return net.eval()


def load_backbone(source: str | os.PathLike, *, backbone: str | None = None, stem: str | None = None,
                  width: int | None = None, num_classes: int | None = None) -> nn.Module:
    """A plain torchvision (or timm) backbone with the weights of ``source``.

    ``source`` is anything `load_backbone_state` reads: a run folder, ``backbone.pth``, ``backbone.safetensors``,
    the official ``resnet50.pth`` or full checkpoint, our ``checkpoint.pth``, ``torchvision:<model>:<weights>``.
    The architecture comes from the source when it says (run folders, our checkpoints, safetensors metadata),
    else from ``backbone``/``stem``/``width`` (default resnet50).

    Without ``num_classes`` it is a feature extractor: the classifier is ``nn.Identity`` (the module returns
    (N, num_features) features) and the module is in **eval mode** (BatchNorm uses its running statistics), ready
    to embed images. With ``num_classes=N`` it is a classifier to fine-tune: a new randomly initialised
    ``nn.Linear(num_features, N)`` head, and the module is in **train mode**, as a freshly built torchvision model
    is (call ``.eval()`` before predicting).

    The module's class is the model's own: ``torchvision.models.ResNet`` for a ResNet (a `WidthResNet`, its
    public subclass in ``barlowtwins.models.backbones``, for a narrow one), timm's class for ``timm:`` names. Its
    ``arch`` attribute is the architecture read (backbone, stem, width, and the image size when recorded).
    """
    net = build_backbone(load_backbone_state(source), backbone=backbone, stem=stem, width=width,
                         num_classes=num_classes)
    return net.train(num_classes is not None)


DEFAULT_IMAGE_SIZE = 224  # the input size a reader takes for a backbone that records none


def image_size_or_default(arch: dict | None, given: int | None = None, origin: str = "the backbone",
                          flag: str = "--image-size") -> int:
    """The input size to use for a backbone: ``given``, else the one its source records (``arch["image_size"]``),
    else `DEFAULT_IMAGE_SIZE` with one warning line on stderr naming ``origin``: a backbone pretrained on 64-px
    images is otherwise silently evaluated (or traced) at 224 px."""
    if given:
        return int(given)
    recorded = (arch or {}).get("image_size")
    if recorded:
        return int(recorded)
    warn_default_image_size(origin, flag)
    return DEFAULT_IMAGE_SIZE


_WARNED: set[str] = set()  # the sources already warned about in this process: one line each


def warn_default_image_size(origin: str = "the backbone", flag: str = "--image-size") -> None:
    """The one line a reader prints when it falls back to `DEFAULT_IMAGE_SIZE` (see `image_size_or_default`), once
    per source and process."""
    if origin in _WARNED:
        return
    _WARNED.add(origin)
    log.warning(f"warning: {origin} records no image size: using {DEFAULT_IMAGE_SIZE} px; give {flag} N (the size it "
                "was pretrained at), or save it with save_backbone(..., image_size=N)")
