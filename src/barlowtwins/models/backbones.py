"""Backbones by name: any torchvision classification model, or ``timm:<name>``, with stems and widths.

    >>> backbone = create_backbone("resnet50")            # torchvision ResNet-50, fc -> Identity
    >>> backbone.num_features
    2048
    >>> create_backbone("timm:resnet10t").num_features  # any timm model, when timm is installed
    512

The projector is `models.projector`, the module that joins both with the loss `models.barlow_twins`.

The backbone stays a plain torchvision module (only its classifier replaced by ``nn.Identity``), so its
``state_dict()`` loads into ``torchvision.models.<name>()`` with just the classifier keys missing, exactly like
the official ``resnet50.pth`` release.
"""

from __future__ import annotations

from collections.abc import Sequence

import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from barlowtwins.errors import ConfigError, field_error
from barlowtwins.runtime.console import did_you_mean

STEMS = ("standard", "small", "small-pool")

# Bounds of the architecture fields, declared once: the config's ranges, `create_backbone` and every reader of a
# recorded architecture (file metadata, a run folder's config.yaml) check against them, so a typo or a hostile
# file is refused in one line instead of building a network that does not fit in memory.
MAX_WIDTH = 1024  # channels of a ResNet's first stage (torchvision's is 64; 16x that is already ~6B weights)
MAX_IMAGE_SIZE = 4096  # pixels per side of the square input


def check_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` as an int in ``lo..hi``, else a one-line `ConfigError` naming ``name`` and the range."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer from {lo} to {hi}, got {value!r:.60}")
    if value < lo:
        raise ConfigError(f"{name} must be at least {lo}, got {value}")
    if value > hi:
        raise ConfigError(f"{name} must be at most {hi}, got {value}")
    return int(value)


TIMM_PREFIX = "timm:"


def available_backbones() -> list[str]:
    """Every torchvision classification model name (not all of them have a removable linear head)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def list_backbones(pattern: str | None = None, *, include_timm: bool = True) -> list[str]:
    """Backbone names ``create_backbone`` accepts, filtered by a shell-style ``pattern`` (``resnet*``, ``*vit*``).

    torchvision's classifiers first, then (when timm is installed) timm's models as ``timm:<name>``. A pattern
    without wildcards matches names containing it.
    """
    import fnmatch

    pat = pattern or "*"
    if not any(c in pat for c in "*?["):
        pat = f"*{pat}*"
    names = [n for n in available_backbones() if fnmatch.fnmatchcase(n, pat)]
    if include_timm and timm_module() is not None:
        inner = pat[len(TIMM_PREFIX):] if pat.startswith(TIMM_PREFIX) else pat
        names += [TIMM_PREFIX + n for n in timm_module().list_models(inner)]
    return names


def timm_module():
    """The timm module, or None when the optional extra is not installed."""
    try:
        import timm
    except ImportError:
        return None
    return timm


def check_backbone_name(name: str) -> None:
    """Raise a one-line `ConfigError` (with the closest names) unless ``name`` is a torchvision classifier or, with
    timm installed, ``timm:<model>``. Cheap: builds nothing (the config checks every run's backbone with it)."""
    if name.startswith(TIMM_PREFIX):
        inner, timm = name[len(TIMM_PREFIX):], timm_module()
        if timm is None:
            raise ConfigError(f"backbone '{name}' needs timm: pip install 'barlowtwins[timm]'")
        if not timm.is_model(inner):
            raise ConfigError(f"unknown timm model '{inner}'{did_you_mean(inner, timm.list_models(), n=3)}; "
                              "barlowtwins list-backbones 'timm:PATTERN' lists them")
        return
    known = available_backbones()
    if name not in known:
        raise ConfigError(f"unknown backbone '{name}'{did_you_mean(name, known)}; any torchvision classification "
                          "model name works (e.g. resnet18, resnet50), or timm:<name> with timm installed; "
                          "barlowtwins list-backbones lists them")


def _create_timm_backbone(name: str, *, stem: str, width: int | None, weights: str | None) -> nn.Module:
    """A timm model without its classifier (``num_classes=0``: pooled features of size ``num_features``)."""
    timm = timm_module()  # installed and the name known: `check_backbone_name` ran first
    if stem != "standard" or width is not None:
        raise field_error(lambda n: f"{n('stem')} and {n('width')} apply to torchvision ResNets only, not to timm "
                                    "models; pick a timm variant instead (e.g. timm:resnet10t)")
    if weights is not None:
        raise ConfigError("timm weights are not downloaded here; load a checkpoint file with --checkpoint instead")
    model = timm.create_model(name, pretrained=False, num_classes=0)
    model.num_features = int(model.num_features)
    model.head_name = ""  # num_classes=0 leaves no classifier keys in the state dict
    model.arch = {"backbone": TIMM_PREFIX + name, "stem": "standard", "width": None}
    return model


def _head_path(model: nn.Module) -> tuple[str, nn.Linear]:
    """Name and module of the classifier: the last ``nn.Linear`` registered in the model."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ConfigError(f"backbone {type(model).__name__} has no linear classifier head to replace; "
                          "choose a model such as resnet50")
    return found


def set_submodule(model: nn.Module, path: str, new: nn.Module) -> None:
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _zero_init_residual(model: ResNet) -> None:
    # Last BN of each residual branch starts at zero, so every block begins as an identity (Goyal et al.);
    # the same as torchvision's ResNet(zero_init_residual=True), which the official code uses.
    for m in model.modules():
        if isinstance(m, Bottleneck) and m.bn3.weight is not None:
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock) and m.bn2.weight is not None:
            nn.init.zeros_(m.bn2.weight)


class WidthResNet(ResNet):
    """torchvision's ResNet with the first stage's width chosen (later stages double it; 64 = torchvision).

    What `create_backbone` (and so `barlowtwins.load_backbone`) returns for a ResNet with ``width``: a subclass
    of ``torchvision.models.ResNet`` (``isinstance(net, torchvision.models.ResNet)`` holds), with the same
    attributes, forward and state-dict keys, so checkpoints stay readable by the same code; shapes follow the
    width. ``WidthResNet(block, layers, width)`` takes torchvision's ``BasicBlock``/``Bottleneck`` and the four
    stage depths (``[2, 2, 2, 2]`` for a ResNet-18).
    """

    def __init__(self, block, layers: Sequence[int], width: int, groups: int = 1, width_per_group: int = 64):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.inplanes = width
        self.dilation = 1
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, width * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(block, width * 4, layers[2], stride=2)
        self.layer4 = self._make_layer(block, width * 8, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width * 8 * block.expansion, 1000)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


_WidthResNet = WidthResNet  # its former, private name


def create_backbone(name: str, *, stem: str = "standard", zero_init_residual: bool = True,
                    width: int | None = None, weights: str | None = None) -> nn.Module:
    """A torchvision classification model by name with its classifier replaced by ``nn.Identity``.

    Args:
        name: any torchvision classification model name (``resnet18``, ``resnet50``, ``wide_resnet50_2``,
            ``convnext_tiny``, ``efficientnet_b0``, ...), or ``timm:<name>`` for a timm model (optional extra;
            built with ``num_classes=0``, so it returns pooled features of its ``num_features``).
        stem: ResNet family only. ``standard`` (7x7 stride-2 conv + max-pool, ImageNet); ``small`` (3x3
            stride-1 conv, no max-pool: CIFAR-style for 32-px images); ``small-pool`` (3x3 stride-1 conv
            followed by the max-pool: a cheaper middle ground for 28-64 px images).
        zero_init_residual: zero the last BN of every residual branch (ResNet family; ignored elsewhere).
        width: ResNet family only: channels of the first stage (torchvision's is 64). Narrow ResNets are
            for CPU-sized runs.
        weights: torchvision weight name (e.g. ``IMAGENET1K_V2`` or ``DEFAULT``); downloaded by torchvision.

    The returned module is the model's own class (``torchvision.models.ResNet`` for ``resnet50``, timm's for
    ``timm:`` names), or `WidthResNet`, a public ``ResNet`` subclass, when ``width`` is given. It has
    ``num_features`` (the width of its output, read off the removed head) and ``arch`` (``{"backbone", "stem",
    "width"}``: what `barlowtwins.save_backbone` records so that it loads without flags).
    """
    check_backbone_name(name)
    if name.startswith(TIMM_PREFIX):
        return _create_timm_backbone(name[len(TIMM_PREFIX):], stem=stem, width=width, weights=weights)
    if stem not in STEMS:
        raise ConfigError(f"unknown stem '{stem}'; choose one of {', '.join(STEMS)}")
    if width is not None:
        width = check_int("width (channels of the first stage)", width, 1, MAX_WIDTH)
    if width is not None and weights is not None:
        raise field_error(lambda n: f"{n('width')} changes the architecture and cannot be combined with pretrained "
                                    "weights")
    kwargs = {}
    if name.startswith(("googlenet", "inception")):
        kwargs["aux_logits"] = False  # torchvision drops the auxiliary heads after loading weights
        if weights is None:
            kwargs["init_weights"] = True
    model = torchvision.models.get_model(name, weights=weights, **kwargs)
    is_resnet = isinstance(model, ResNet)
    if width is not None:
        if not is_resnet:
            raise ConfigError(f"width is only supported for ResNet-family backbones, not '{name}'")
        block = type(model.layer1[0])
        layers = [len(model.layer1), len(model.layer2), len(model.layer3), len(model.layer4)]
        model = WidthResNet(block, layers, width, groups=model.groups, width_per_group=model.base_width)
    if stem != "standard":
        if not is_resnet:
            raise ConfigError(f"stem '{stem}' is only supported for ResNet-family backbones, not '{name}'")
        width0 = model.conv1.out_channels
        model.conv1 = nn.Conv2d(3, width0, kernel_size=3, stride=1, padding=1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        if stem == "small":
            model.maxpool = nn.Identity()
    if is_resnet and zero_init_residual and weights is None:
        _zero_init_residual(model)
    head_name, head = _head_path(model)
    num_features = head.in_features
    set_submodule(model, head_name, nn.Identity())
    model.num_features = num_features
    model.head_name = head_name
    model.arch = {"backbone": name, "stem": stem, "width": width}  # what `save_backbone` records
    return model


