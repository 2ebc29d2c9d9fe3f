"""torch.hub entry points: a plain torchvision backbone with Barlow Twins weights.

    model = torch.hub.load("path/to/barlowtwins", "resnet50", source="local", weights="runs/x/backbone.pth")
    features = model.eval()(images)            # (N, 2048): the classifier is nn.Identity

``weights`` is anything ``barlowtwins.load_backbone`` reads (run folder, backbone.pth, backbone.safetensors,
the official resnet50.pth or full checkpoint, our checkpoint.pth); ``None`` gives torchvision's random
initialisation. The model's ``fc`` is ``nn.Identity`` (the model returns pooled features); pass
``num_classes=1000`` (or any number) for a new, randomly initialised ``nn.Linear`` head to fine-tune.
"""

import os
import sys

dependencies = ["torch", "torchvision"]

try:
    import barlowtwins  # noqa: F401 - installed, or already on the path
except ImportError:  # a source checkout: the package lives in src/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "src"))


def _backbone(name, weights=None, num_classes=None, **arch):
    from barlowtwins.models.backbones import create_backbone, set_submodule
    from barlowtwins.weights.load import load_backbone

    if weights is not None:
        return load_backbone(weights, backbone=name, num_classes=num_classes, **arch)
    net = create_backbone(name, zero_init_residual=False, **arch)
    if num_classes is not None:
        import torch

        set_submodule(net, net.head_name, torch.nn.Linear(net.num_features, num_classes))
    return net


def backbone(name="resnet50", weights=None, num_classes=None, **arch):
    """Any torchvision model name (or timm:<name>); ``stem``/``width`` for narrow or small-image ResNets."""
    return _backbone(name, weights, num_classes, **arch)


def resnet18(weights=None, num_classes=None, **arch):
    """torchvision ResNet-18 with Barlow Twins weights from ``weights`` (fc = Identity unless num_classes)."""
    return _backbone("resnet18", weights, num_classes, **arch)


def resnet34(weights=None, num_classes=None, **arch):
    """torchvision ResNet-34 with Barlow Twins weights from ``weights`` (fc = Identity unless num_classes)."""
    return _backbone("resnet34", weights, num_classes, **arch)


def resnet50(weights=None, num_classes=None, **arch):
    """torchvision ResNet-50 with Barlow Twins weights from ``weights`` (fc = Identity unless num_classes)."""
    return _backbone("resnet50", weights, num_classes, **arch)


def resnet101(weights=None, num_classes=None, **arch):
    """torchvision ResNet-101 with Barlow Twins weights from ``weights`` (fc = Identity unless num_classes)."""
    return _backbone("resnet101", weights, num_classes, **arch)


def resnet152(weights=None, num_classes=None, **arch):
    """torchvision ResNet-152 with Barlow Twins weights from ``weights`` (fc = Identity unless num_classes)."""
    return _backbone("resnet152", weights, num_classes, **arch)


def wide_resnet50_2(weights=None, num_classes=None, **arch):
    """torchvision Wide ResNet-50-2 with Barlow Twins weights from ``weights`` (fc = Identity unless num_classes)."""
    return _backbone("wide_resnet50_2", weights, num_classes, **arch)
