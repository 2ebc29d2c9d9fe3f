"""The classifier protocol's frozen-backbone check and schedules."""

import pytest
import torch

from barlowtwins.evaluate.classifier import ClassifierRun, assert_unchanged, lr_factor, snapshot
from barlowtwins.models.backbones import create_backbone


def test_frozen_backbone_check_catches_a_change():
    net = create_backbone("resnet18", width=8)
    before = snapshot(net)
    assert_unchanged(net, before)
    net.train()
    net(torch.randn(4, 3, 32, 32))  # a forward in train mode updates BN running statistics
    with pytest.raises(RuntimeError, match="frozen-backbone check failed.*running_mean"):
        assert_unchanged(net, before)


def test_classifier_schedules():
    cos = ClassifierRun(epochs=20, batch_size=256, image_size=32, device=torch.device("cpu"))
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 10) == pytest.approx(0.5)
    step = ClassifierRun(epochs=20, batch_size=256, image_size=32, device=torch.device("cpu"), schedule="step")
    assert [lr_factor(step, e) for e in (0, 11, 12, 15, 16, 19)] == pytest.approx([1, 1, 0.2, 0.2, 0.04, 0.04])
