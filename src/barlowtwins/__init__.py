"""Barlow Twins: self-supervised learning via redundancy reduction (Zbontar et al., 2021).

The parts work on their own, in any training loop:

    from barlowtwins import (LARS, BarlowTwinsLoss, TwoViewTransform, WarmupCosine, build_model, image_folder,
                             lars_param_groups, save_backbone)

    ds = image_folder("my_images", transform=TwoViewTransform(image_size=96))  # items ((x1, x2), -1)
    model = build_model("resnet18", "2048-2048", stem="small")                # model(x1, x2): the scalar loss
    opt = LARS(lars_param_groups(model))                      # the paper's base rates, 0.2 / 0.0048 per 256 samples
    sched = WarmupCosine(opt, total_steps, warmup_steps, batch_size=batch_size)  # rates x batch_size / 256;
                                                                                 # sched.step() after opt.step()
    save_backbone(model.backbone, "backbone.safetensors", image_size=96)      # with its architecture and size

``lars_param_groups`` only splits the parameters: ``torch.optim.AdamW(lars_param_groups(model), lr=1e-3)`` trains
at 1e-3 (no weight decay on biases and norms). ``BarlowTwinsLoss()`` computes on the calling process;
``BarlowTwinsLoss(distributed=True)`` (and ``build_model``'s loss) is global over the ranks of torch.distributed,
which every rank must then call at each step.

A pretrained backbone loads from any source (run folder, .pth, .safetensors, official checkpoints):

    net = barlowtwins.load_backbone("runs/x")   # torchvision module, fc = Identity, eval mode
    clf = barlowtwins.load_backbone("runs/x", num_classes=10)   # a new 10-way head, train mode: to fine-tune

and the whole pretraining run of ``barlowtwins pretrain`` is one call, with the same plan: the fields not given
are fitted to the data as the CLI fits them (``fit=False`` runs the config as it is):

    summary = barlowtwins.pretrain(barlowtwins.PretrainConfig(dataset="images", data_dir="my_images", out="runs/x"))
    cfg = barlowtwins.recipe_for("my_images", out="runs/x")        # that plan as a config, to read or change first
    cfg = barlowtwins.recipe_for("cifar10")                        # a built-in data set: its size, a fitting network
    cfg = barlowtwins.PretrainConfig(preset="cifar10", epochs=100)  # a preset (--preset): the fields given win

``help(barlowtwins.PretrainConfig)`` lists every field with its meaning (each is a ``barlowtwins pretrain`` flag).
"""

from barlowtwins.data.datasets import build_dataset, image_folder
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.models.backbones import WidthResNet, create_backbone
from barlowtwins.models.barlow_twins import BarlowTwins, build_model
from barlowtwins.models.loss import BarlowTwinsLoss, BarlowTwinsLossOutput, barlow_twins_loss, cross_correlation
from barlowtwins.models.projector import Projector, parse_projector_spec
from barlowtwins.training.autoconfig import recipe_for
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
    "BarlowTwins", "Projector", "WidthResNet", "build_model", "create_backbone", "parse_projector_spec",
    "build_dataset", "build_pipeline", "image_folder",
    "load_backbone", "save_backbone",
    "LARS", "WarmupCosine", "lars_param_groups", "set_learning_rates", "warmup_cosine",
    "PretrainConfig", "pretrain", "recipe_for", "__version__",
]
