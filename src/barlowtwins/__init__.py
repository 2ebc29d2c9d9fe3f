"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al., 2021).

The parts work on their own, in any training loop:

    from barlowtwins import BarlowTwinsLoss, Projector, create_backbone, LARS, TwoViewTransform

and a pretrained backbone loads from any source (run folder, .pth, .safetensors, official checkpoints):

    net = barlowtwins.load_backbone("runs/x")   # torchvision module, fc = Identity, eval mode
"""

__version__ = "0.1.0"

from barlowtwins.models.backbones import create_backbone  # noqa: E402
from barlowtwins.models.barlow_twins import BarlowTwins, build_model
from barlowtwins.models.loss import BarlowTwinsLoss, BarlowTwinsLossOutput, barlow_twins_loss, cross_correlation  # noqa: E402
from barlowtwins.models.projector import Projector, parse_projector_spec
from barlowtwins.training.optim import LARS, WarmupCosine, lars_param_groups, set_learning_rates  # noqa: E402
from barlowtwins.transforms.spec import AugmentConfig, augment_config
from barlowtwins.transforms.tensor import BatchViews
from barlowtwins.transforms.two_view import TwoViewTransform  # noqa: E402
from barlowtwins.weights.load import load_backbone  # noqa: E402

__all__ = [
    "AugmentConfig", "BatchViews", "TwoViewTransform", "augment_config",
    "BarlowTwinsLoss", "BarlowTwinsLossOutput", "barlow_twins_loss", "cross_correlation",
    "BarlowTwins", "Projector", "build_model", "create_backbone", "parse_projector_spec",
    "load_backbone",
    "LARS", "WarmupCosine", "lars_param_groups", "set_learning_rates",
]
