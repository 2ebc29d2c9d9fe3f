"""The frozen (or to-be-fine-tuned) backbone an evaluation runs on, with what is known about it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.features import cached_features_kept
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.hardware import autocast_dtype, select_device
from barlowtwins.runtime.log import get_logger
from barlowtwins.runtime.memory_format import use_channels_last
from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD
from barlowtwins.weights.sources import load_backbone_state, load_backbone_weights

log = get_logger(__name__)


@dataclass
class EvalSetup:
    backbone: torch.nn.Module
    device: torch.device
    amp_dtype: torch.dtype | None
    image_size: int
    mean: tuple
    std: tuple
    checkpoint: str
    checkpoint_sha256: str | None
    arch: dict  # backbone/stem/width, and the pretraining data set when the source says
    loaded_keys: int
    cache_dir: str | None = None  # where extracted features are kept for reuse (None: no cache)
    started: float = field(default_factory=time.time)

    @property
    def backbone_features(self) -> int:
        # torch types a module's undeclared attributes as Tensor | Module; create_backbone sets this int
        return int(self.backbone.num_features)  # type: ignore[arg-type]

    def feature_kwargs(self, workers=None, batch_size: int = 256) -> dict:
        return dict(image_size=self.image_size, device=self.device, amp_dtype=self.amp_dtype, mean=self.mean,
                    std=self.std, workers=workers, batch_size=batch_size)

    def features(self, dataset, dataset_name: str, split: str, *, mirror: bool = False, batch_size: int = 256,
                 workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen features of ``dataset`` (cached in ``cache_dir`` and reused when possible); the rows of unreadable
        files are left out (see `features_kept`)."""
        f, y, _ = self.features_kept(dataset, dataset_name, split, mirror=mirror, batch_size=batch_size,
                                     workers=workers)
        return f, y

    def features_kept(self, dataset, dataset_name: str, split: str, *, mirror: bool = False, batch_size: int = 256,
                      workers: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`features` and the data set index of each row."""
        key = {"checkpoint": self.checkpoint_sha256 or self.checkpoint, "arch": self.describe()["backbone"],
               "dataset": dataset_name, "split": split, "image_size": self.image_size, "mean": list(self.mean),
               "std": list(self.std)}
        return cached_features_kept(self.backbone, dataset, key=key, cache_dir=self.cache_dir, mirror=mirror,
                               progress=True, **self.feature_kwargs(workers, batch_size))

    def describe(self) -> dict:
        return {"checkpoint": self.checkpoint, "checkpoint_sha256": self.checkpoint_sha256,
                "backbone": {k: self.arch.get(k) for k in ("backbone", "stem", "width")},
                "image_size": self.image_size, "random_init": self.loaded_keys == 0}


def load_eval_backbone(checkpoint: str | None, *, random_init: bool = False, backbone: str | None = None,
                       stem: str | None = None, width: int | None = None, image_size: int | None = None,
                       mean=None, std=None, device: str = "auto", precision: str = "auto",
                       cache_dir: str | None = "auto") -> EvalSetup:
    """Build the backbone a checkpoint describes (explicit arguments win) and load its weights.

    ``random_init=True`` builds the same architecture with torchvision's initialisation (no zero-init of the
    residual branches), the usual random-features baseline. ``cache_dir="auto"`` keeps extracted features in
    ``<run>/eval/cache`` when the checkpoint is a run folder (a trained backbone only); ``None`` turns caching off.
    """
    info = D.init_distributed()
    if checkpoint is None and not (random_init and backbone):
        raise ConfigError("give --checkpoint (a run folder or weights file), or --random-init with --backbone")
    src = load_backbone_state(checkpoint) if checkpoint else None
    arch = dict(src.arch) if src else {}
    for key, value in (("backbone", backbone), ("stem", stem), ("width", width), ("image_size", image_size)):
        if value is not None:
            arch[key] = value
    arch.setdefault("backbone", "resnet50")
    arch.setdefault("stem", "standard")
    torch.manual_seed(0)
    net = create_backbone(arch["backbone"], stem=arch["stem"], width=arch.get("width"),
                          zero_init_residual=not random_init)
    loaded = 0
    if src is not None and not random_init:
        loaded = len(load_backbone_weights(net, src))
        if D.is_main_process():
            log.info(f"loaded {loaded} backbone tensors from {src.origin}")
    dev = select_device(device, info.local_rank)
    net.to(dev)
    if use_channels_last(net, dev):
        net.to(memory_format=torch.channels_last)
    origin = (src.origin if src else "random init") + (" [random init]" if src and random_init else "")
    if cache_dir == "auto":
        if checkpoint is not None and Path(checkpoint).is_dir() and not random_init:  # a trained run folder
            cache_dir = str(Path(checkpoint) / "eval" / "cache")
        else:
            cache_dir = None
    return EvalSetup(net, dev, autocast_dtype(precision, dev), int(arch.get("image_size") or 224),
                     tuple(mean or arch.get("mean") or IMAGENET_MEAN), tuple(std or arch.get("std") or IMAGENET_STD),
                     origin, src.sha256 if src else None, arch, loaded, cache_dir)
