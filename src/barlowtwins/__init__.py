"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al., 2021).

The parts work on their own, in any training loop:

    from barlowtwins import (LARS, BarlowTwinsLoss, TwoViewTransform, WarmupCosine, build_model, image_folder,
                             lars_param_groups, save_backbone)

    ds = image_folder("my_images", transform=TwoViewTransform(image_size=96))  # items ((x1, x2), -1)
    model = build_model("resnet18", "2048-2048", stem="small")                # model(x1, x2): the scalar loss
    opt = LARS(lars_param_groups(model))                                      # the paper's base rates
    sched = WarmupCosine(opt, total_steps, warmup_steps)                      # sched.step() after opt.step()
    save_backbone(model.backbone, "backbone.safetensors")                     # with its architecture

and a pretrained backbone loads from any source (run folder, .pth, .safetensors, official checkpoints):

    net = barlowtwins.load_backbone("runs/x")   # torchvision module, fc = Identity, eval mode

and the whole pretraining run of ``barlowtwins pretrain`` is one call:

    summary = barlowtwins.pretrain(barlowtwins.PretrainConfig(dataset="images", data_dir="my_images", out="runs/x"))
"""

from barlowtwins.data.datasets import build_dataset, image_folder
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.models.backbones import create_backbone
from barlowtwins.models.barlow_twins import BarlowTwins, build_model
from barlowtwins.models.loss import BarlowTwinsLoss, BarlowTwinsLossOutput, barlow_twins_loss, cross_correlation
from barlowtwins.models.projector import Projector, parse_projector_spec
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.optim import LARS, WarmupCosine, lars_param_groups, set_learning_rates, warmup_cosine
from barlowtwins.training.trainer import pretrain
from barlowtwins.transforms.multicrop import MultiCrop
from barlowtwins.transforms.spec import AugmentConfig, augment_config
from barlowtwins.transforms.tensor import BatchViews
from barlowtwins.transforms.two_view import TwoViewTransform
from barlowtwins.version import __version__
from barlowtwins.weights.load import load_backbone
from barlowtwins.weights.save import save_backbone

__all__ = [
    "AugmentConfig", "BatchViews", "MultiCrop", "TwoViewTransform", "augment_config",
    "BarlowTwinsLoss", "BarlowTwinsLossOutput", "barlow_twins_loss", "cross_correlation",
    "BarlowTwins", "Projector", "build_model", "create_backbone", "parse_projector_spec",
    "build_dataset", "build_pipeline", "image_folder",
    "load_backbone", "save_backbone",
    "LARS", "WarmupCosine", "lars_param_groups", "set_learning_rates", "warmup_cosine",
    "PretrainConfig", "pretrain", "__version__",
]
