"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al., 2021).

The parts work on their own, in any training loop:

    from barlowtwins import BarlowTwinsLoss, Projector, create_backbone, LARS, TwoViewTransform

and a pretrained backbone loads from any source (run folder, .pth, .safetensors, official checkpoints):

    net = barlowtwins.load_backbone("runs/x")   # torchvision module, fc = Identity, eval mode
"""

__version__ = "0.1.0"

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # Large CPU tensors (a batch of views, activations) in 2 MB transparent huge pages: a fresh 38 MB tensor
    # costs ~9 ms instead of ~28 ms of page faults on a VM. PyTorch reads this once, when it is imported;
    # set THP_MEM_ALLOC_ENABLE=0 to keep the default.
    _os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from .export import load_backbone  # noqa: E402
from .augment import AugmentConfig, BatchViews, TwoViewTransform, augment_config  # noqa: E402
from .losses import BarlowTwinsLoss, BarlowTwinsLossOutput, barlow_twins_loss, cross_correlation  # noqa: E402
from .models import BarlowTwins, Projector, build_model, create_backbone, parse_projector_spec  # noqa: E402
from .optim import LARS, WarmupCosine, lars_param_groups, set_learning_rates  # noqa: E402

__all__ = [
    "AugmentConfig", "BatchViews", "TwoViewTransform", "augment_config",
    "BarlowTwinsLoss", "BarlowTwinsLossOutput", "barlow_twins_loss", "cross_correlation",
    "BarlowTwins", "Projector", "build_model", "create_backbone", "parse_projector_spec",
    "load_backbone",
    "LARS", "WarmupCosine", "lars_param_groups", "set_learning_rates",
]
