"""The detectors around our backbones: the checkpoint's weights land in the C4 trunk; FPN and refusals."""

from __future__ import annotations

import pytest
import torch

from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.detection.model import C4Trunk, build_detector
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.files import save_atomic
from barlowtwins.weights.save import backbone_state
from barlowtwins.weights.sources import load_backbone_state, load_backbone_weights


def backbone_modules(detector: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """The detector's pieces that came from the backbone, under the backbone's names (``layer4`` included)."""
    body = detector.backbone
    if isinstance(body, C4Trunk):
        return {**dict(body.named_children()), "layer4": detector.roi_heads.box_head.layer4}
    return dict(body.body.named_children())  # FPN: an IntermediateLayerGetter over conv1 ... layer4


@pytest.mark.parametrize("task", ["detection", "instance-segmentation"])
def test_c4_detector_holds_the_checkpoint_weights(tmp_path, task):
    torch.manual_seed(3)
    net = create_backbone("resnet18", width=8)
    save_atomic(backbone_state(net), tmp_path / "backbone.pth")
    src = load_backbone_state(tmp_path / "backbone.pth")
    fresh = create_backbone("resnet18", width=8)
    load_backbone_weights(fresh, src)
    det = build_detector(fresh, num_classes=3, task=task, min_size=64, max_size=96)
    parts = backbone_modules(det)
    assert set(parts) == {"conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"}
    for name, module in parts.items():
        for key, value in module.state_dict().items():
            assert torch.equal(value, src.state[f"{name}.{key}"]), f"{name}.{key}"
    assert det.backbone.out_channels == 32  # layer3 of width 8: the RPN and RoIAlign read stride 16
    assert det.roi_heads.box_predictor.cls_score.in_features == 64  # layer4 + pooling per RoI
    assert all(p.requires_grad for p in det.parameters())  # every stage (and BN) trains
    if task == "instance-segmentation":
        assert det.roi_heads.mask_head is det.roi_heads.box_head.layer4  # the shared res5


def test_fpn_detector_and_a_non_resnet_is_refused():
    det = build_detector(create_backbone("resnet18", width=8), 2, head="fpn", min_size=64, max_size=96)
    assert set(backbone_modules(det)) >= {"conv1", "layer4"}
    with pytest.raises(ConfigError, match="ResNet"):
        build_detector(create_backbone("mobilenet_v3_small"), 2)
