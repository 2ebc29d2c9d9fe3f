"""Faster R-CNN / Mask R-CNN around one of our ResNet backbones, built from torchvision parts.

``head="c4"`` is Detectron's R50-C4, the detector the paper (and MoCo before it) transfers to: the backbone up to
``layer3`` (stride 16) feeds the RPN and a 14x14 RoIAlign; ``layer4`` (stride 2: 14x14 -> 7x7) runs per RoI in
the box head, followed by global average pooling and the class/box predictor. For Mask R-CNN the mask branch
shares that ``layer4`` (as Detectron2's ``Res5ROIHeads`` does): RoI features -> ``layer4`` -> a 2x2 stride-2
deconvolution to 256 channels -> per-class 14x14 mask logits. RPN settings follow Detectron2's C4 defaults
(anchors 32-512 px at ratios 0.5/1/2 on the one feature map; 12000/2000 proposals before/after NMS in training,
6000/1000 in testing; 256 anchors and 512 RoIs sampled per image).

``head="fpn"`` is torchvision's ResNet-FPN detector (layer1-4 + a feature pyramid, two-layer MLP box head).

Every backbone stage is trainable and its BatchNorm layers train too (the self-supervised transfer protocol:
no frozen BN); under a process group they are synchronised (`convert_sync_batchnorm`).

Differences from Detectron2 that remain: torchvision's RoIAlign is the original (``aligned=False``) one, and
no "precise BN" pass re-estimates the BN statistics before testing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from barlowtwins.errors import ConfigError

HEADS = ("c4", "fpn")
TASKS = ("detection", "instance-segmentation")
C4_ANCHOR_SIZES = (32, 64, 128, 256, 512)
C4_RPN = dict(rpn_pre_nms_top_n_train=12000, rpn_post_nms_top_n_train=2000, rpn_pre_nms_top_n_test=6000,
              rpn_post_nms_top_n_test=1000, rpn_batch_size_per_image=256,
              box_detections_per_img=100, box_score_thresh=0.05)


def stage_channels(stage: nn.Sequential) -> int:
    """Output channels of a ResNet stage (its last block's last convolution)."""
    block = stage[-1]
    conv = getattr(block, "conv3", None) or getattr(block, "conv2")
    return int(conv.out_channels)


def _check_resnet(backbone: nn.Module) -> None:
    needed = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    missing = [n for n in needed if not hasattr(backbone, n)]
    if missing:
        raise ConfigError(f"detection transfer needs a ResNet-family backbone (conv1 ... layer4); "
                          f"{type(backbone).__name__} has no {', '.join(missing)}")


class C4Trunk(nn.Sequential):
    """The backbone up to ``layer3`` (stride 16), its modules under the backbone's own names.

    ``(N, 3, H, W) -> (N, C4, H/16, W/16)``; ``out_channels`` is what torchvision's detectors read.
    """

    def __init__(self, backbone: nn.Module):
        names = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3")
        super().__init__(OrderedDict((n, getattr(backbone, n)) for n in names))
        # getattr, as for the modules above: torch types a module's attributes as Tensor | Module, not the stage
        self.out_channels = stage_channels(getattr(backbone, "layer3"))


class Res5Head(nn.Sequential):
    """The box head of C4: ``layer4`` on each RoI, then global average pooling. ``(R, C4, 14, 14) -> (R, C5)``."""

    def __init__(self, layer4: nn.Sequential):
        super().__init__(OrderedDict(layer4=layer4, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))
        self.out_channels = stage_channels(layer4)


def build_detector(backbone: nn.Module, num_classes: int, *, head: str = "c4", task: str = "detection",
                   min_size: int | Sequence[int] = 800, max_size: int = 1333,
                   image_mean: Sequence[float] = (0.485, 0.456, 0.406),
                   image_std: Sequence[float] = (0.229, 0.224, 0.225), rois_per_image: int = 512) -> FasterRCNN:
    """A Faster R-CNN (``task="detection"``) or Mask R-CNN (``"instance-segmentation"``) on ``backbone``.

    Args:
        backbone: a torchvision ResNet (ours: ``create_backbone``), weights already loaded. Its modules are
            used as they are (not copied): the detector trains them.
        num_classes: object classes, background not counted.
        min_size: shorter image side; several values = one chosen at random per training batch (multi-scale).
        max_size: longest side cap.
        image_mean, image_std: the normalisation the backbone was trained with (images come in [0, 1]).
        rois_per_image: proposals sampled per training image for the RoI head (Detectron2's 512; a quarter
            of them foreground at most).
    """
    if head not in HEADS:
        raise ConfigError(f"unknown detection head '{head}'; choose {' or '.join(HEADS)}")
    if task not in TASKS:
        raise ConfigError(f"unknown task '{task}'; choose {' or '.join(TASKS)}")
    _check_resnet(backbone)
    sizes = tuple(min_size) if isinstance(min_size, Sequence) else (int(min_size),)
    common = dict(min_size=sizes, max_size=max_size, image_mean=list(image_mean), image_std=list(image_std),
                  box_batch_size_per_image=rois_per_image)
    masks = task == "instance-segmentation"
    if head == "fpn":
        channels = [stage_channels(getattr(backbone, f"layer{i}")) for i in range(1, 5)]
        body = BackboneWithFPN(backbone, {f"layer{i}": str(i - 1) for i in range(1, 5)}, channels, 256,
                               extra_blocks=LastLevelMaxPool())
        return (MaskRCNN if masks else FasterRCNN)(body, num_classes=num_classes + 1, **common)

    trunk = C4Trunk(backbone)
    res5 = Res5Head(getattr(backbone, "layer4"))  # a stage (_check_resnet), typed by torch as Tensor | Module
    anchors = AnchorGenerator(sizes=(C4_ANCHOR_SIZES,), aspect_ratios=((0.5, 1.0, 2.0),))
    kwargs = dict(rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(["0"], 14, sampling_ratio=0),
                  box_head=res5, box_predictor=FastRCNNPredictor(res5.out_channels, num_classes + 1),
                  **C4_RPN, **common)
    if not masks:
        return FasterRCNN(trunk, num_classes=None, **kwargs)
    return MaskRCNN(trunk, num_classes=None, mask_roi_pool=MultiScaleRoIAlign(["0"], 14, sampling_ratio=0),
                    mask_head=backbone.layer4,  # shared with the box head: RoI (14x14) -> res5 (7x7)
                    mask_predictor=MaskRCNNPredictor(res5.out_channels, 256, num_classes + 1), **kwargs)
