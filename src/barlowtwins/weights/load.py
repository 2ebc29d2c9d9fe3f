"""Load a pretrained backbone from any source into a ready torchvision/timm module."""

from __future__ import annotations

import os

from torch import nn

from barlowtwins.models.backbones import create_backbone, set_submodule
from barlowtwins.weights.sources import BackboneSource, load_backbone_state, load_backbone_weights, resolve_arch


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
            net.reset_classifier(num_classes)
        else:
            set_submodule(net, net.head_name, nn.Linear(net.num_features, num_classes))
    net.arch = {**arch, "backbone": name}
    return net.eval()


def load_backbone(source: str | os.PathLike, *, backbone: str | None = None, stem: str | None = None,
                  width: int | None = None, num_classes: int | None = None) -> nn.Module:
    """A plain torchvision (or timm) backbone with the weights of ``source``, in eval mode.

    ``source`` is anything `load_backbone_state` reads: a run folder, ``backbone.pth``, ``backbone.safetensors``,
    the official ``resnet50.pth`` or full checkpoint, our ``checkpoint.pth``, ``torchvision:<model>:<weights>``.
    The architecture comes from the source when it says (run folders, our checkpoints, safetensors metadata),
    else from ``backbone``/``stem``/``width`` (default resnet50). The classifier is ``nn.Identity`` (the module
    returns (N, num_features) features) unless ``num_classes`` asks for a new randomly initialised one.
    """
    return build_backbone(load_backbone_state(source), backbone=backbone, stem=stem, width=width,
                          num_classes=num_classes)
