"""The Barlow Twins module: backbone, projector and loss."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn

from barlowtwins.models.backbones import create_backbone
from barlowtwins.models.loss import BarlowTwinsLoss, BarlowTwinsLossOutput
from barlowtwins.models.mixed import mix_inputs, mixed_regulariser
from barlowtwins.models.projector import Projector


class BarlowTwins(nn.Module):
    """Backbone + projector + loss, one module so that DDP wraps the whole step (like the official code).

    ``forward(x1, x2)`` runs the two views through the network separately (BN statistics per view, as in
    the paper) and returns the scalar loss; ``return_parts=True`` returns ``BarlowTwinsLossOutput`` (loss,
    on-diagonal and off-diagonal terms, and the C block when ``c_block`` > 0). ``mix=(perm, alpha, weight)``
    adds the Mixed Barlow Twins regulariser (`models.mixed`): a third forward pass of
    ``alpha * x1 + (1 - alpha) * x2[perm]`` (its own BN statistics, as in the reference code), and
    ``weight * λ * R`` in the loss. ``crops=[x3, ...]``: multi-crop's small crops, (N, 3, s, s) each, embedded
    in one pass per crop size (BN statistics over all small crops of that size, as SwAV batches its crops), and
    ``crop_weight`` times their term in the loss (`models.loss`).

    Without a ``loss`` the module takes ``BarlowTwinsLoss(distributed=True)``: the module is the one DDP wraps, so
    its loss (and the Mixed Barlow Twins term) are global over the ranks of torch.distributed, and every rank
    calls it at each step. Set ``model.loss.distributed = False`` to compute it on one rank alone.

        >>> model = build_model("resnet18", "512-512", stem="small")
        >>> model(x1, x2).backward()
    """

    def __init__(self, backbone: nn.Module, projector: nn.Module, loss: BarlowTwinsLoss | None = None):
        super().__init__()
        self.backbone = backbone
        self.projector = projector
        self.loss = loss if loss is not None else BarlowTwinsLoss(distributed=True)

    @property
    def c_block(self) -> int:
        """Side k of the block C[:k, :k] the parts carry (0: none); set it before the first call when compiled."""
        return self.loss.c_block

    @c_block.setter
    def c_block(self, k: int) -> None:
        if k < 0:
            raise ValueError(f"c_block must be >= 0, got {k}")
        self.loss.c_block = int(k)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) images -> (N, D) projector output."""
        return self.projector(self.backbone(x))

    def embed_crops(self, crops) -> list[torch.Tensor]:
        """Small crops (N, 3, s, s) each -> their (N, D) embeddings, in order; one pass per crop size."""
        out: list[torch.Tensor | None] = [None] * len(crops)
        for shape in dict.fromkeys(tuple(x.shape) for x in crops):
            ks = [k for k, x in enumerate(crops) if tuple(x.shape) == shape]
            for k, z in zip(ks, self.embed(torch.cat([crops[k] for k in ks])).chunk(len(ks))):
                out[k] = z
        return cast("list[torch.Tensor]", out)  # every index is in exactly one shape group: every slot is filled

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, *, return_parts: bool = False,
                mix: tuple[torch.Tensor, float, float] | None = None, crops=(),
                crop_weight: float | torch.Tensor = 1.0) -> torch.Tensor | BarlowTwinsLossOutput:
        z1, z2 = self.embed(x1), self.embed(x2)
        zc = self.embed_crops(crops) if crops else ()
        if mix is None:
            return self.loss(z1, z2, return_parts=return_parts, crops=zc, crop_weight=crop_weight)
        perm, alpha, weight = mix
        zm = self.embed(mix_inputs(x1, x2, perm, alpha))
        out = self.loss(z1, z2, return_parts=True, crops=zc, crop_weight=crop_weight)
        reg = mixed_regulariser(z1, z2, zm, perm, alpha, eps=self.loss.eps, distributed=self.loss.distributed)
        out = out._replace(loss=out.loss + (weight * self.loss.lambd) * reg, mix=reg)
        return out if return_parts else out.loss


def build_model(backbone: str = "resnet50", projector: str = "8192-8192-8192", *, stem: str = "standard",
                width: int | None = None, zero_init_residual: bool = True, projector_bn: bool = True,
                lambd: float = 0.0051, terms: str = "both", c_block: int = 0,
                distributed: bool = True) -> BarlowTwins:
    """The whole Barlow Twins network from names: ``build_model("resnet50", "8192-8192-8192")``.

    ``distributed`` is its loss's (`BarlowTwinsLoss`): ``True`` (default, the module DDP wraps) sums the batch
    statistics and C over the ranks of torch.distributed when there are several, so every rank must call the model
    at each step; ``False`` keeps the loss to the calling process (a model evaluated on one rank alone).
    """
    net = create_backbone(backbone, stem=stem, width=width, zero_init_residual=zero_init_residual)
    # torch types a module's undeclared attributes as Tensor | Module; create_backbone sets this int
    num_features = cast(int, net.num_features)
    return BarlowTwins(net, Projector(num_features, projector, batch_norm=projector_bn),
                       BarlowTwinsLoss(lambd=lambd, terms=terms, c_block=c_block, distributed=distributed))
