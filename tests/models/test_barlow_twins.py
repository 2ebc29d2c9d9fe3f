"""The BarlowTwins module: backbone + projector + loss, the scalar it returns and its parts on request."""

import pytest
import torch

from barlowtwins.models.barlow_twins import BarlowTwins, build_model
from barlowtwins.models.loss import BarlowTwinsLoss, BarlowTwinsLossOutput


def test_barlow_twins_module_forward_and_backward():
    model = build_model("resnet18", "32-32", stem="small", width=8)
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    loss = model(x1, x2)
    assert isinstance(model, BarlowTwins) and isinstance(loss, torch.Tensor) and loss.ndim == 0
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None
    assert model.embed(x1).shape == (4, 32)


def test_parts_on_request_equal_the_scalar_and_the_loss_of_the_embeddings():
    torch.manual_seed(0)
    model = build_model("resnet18", "32-16", stem="small", width=8, lambd=0.02, c_block=4)
    x1, x2 = torch.randn(6, 3, 16, 16), torch.randn(6, 3, 16, 16)
    torch.manual_seed(1)
    loss = model(x1, x2)
    torch.manual_seed(1)
    parts = model(x1, x2, return_parts=True)
    assert isinstance(parts, BarlowTwinsLossOutput)
    torch.testing.assert_close(parts.loss, loss, rtol=0, atol=0)
    torch.testing.assert_close(parts.loss, parts.on_diag + 0.02 * parts.off_diag)
    assert parts.c_block.shape == (4, 4)
    z1, z2 = model.embed(x1), model.embed(x2)  # train mode: the same BN batch statistics as in forward
    expected = BarlowTwinsLoss(0.02)(z1, z2)
    torch.testing.assert_close(loss, expected)


def test_c_block_is_part_of_the_model_api():
    model = build_model("resnet18", "32-16", stem="small", width=8)
    x1, x2 = torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)
    assert model.c_block == 0 and model(x1, x2, return_parts=True).c_block is None
    model.c_block = 8
    assert model.loss.c_block == 8 and model(x1, x2, return_parts=True).c_block.shape == (8, 8)
    with pytest.raises(ValueError, match="c_block"):
        model.c_block = -1
