"""benchmarks/cpu_step.py: each variant measures the trainer's own step (one tiny step each, no timing asserted)."""

from __future__ import annotations

import cpu_step
import pytest
import torch

from barlowtwins.training.config import PretrainConfig


@pytest.mark.parametrize("variant", ["fp32", "fp32+cl", "bf16", "bf16+cl"])
def test_each_eager_variant_runs_the_trainers_step(variant):
    cfg = PretrainConfig(image_size=16, backbone="resnet18", stem="small", width=16, projector="32-32", batch_size=8)
    row = cpu_step.measure(cfg, 3, variant, steps=1, first=1, repeats=1)
    assert row["variant"] == variant and row["samples_per_sec"] > 0 and len(row["rates"]) == 1
    assert row["channels_last"] == variant.endswith("+cl") and torch.isfinite(torch.tensor(row["loss"]))


def test_the_named_configs_are_the_preset_and_the_cpu_folder_recipe():
    preset, channels = cpu_step.config_named("fashion-mnist")
    assert (preset.width, preset.image_size, preset.batch_size, channels) == (16, 28, 128, 3)
    recipe, _ = cpu_step.config_named("images-cpu")
    assert (recipe.image_size, recipe.stem, recipe.batch_size) == (48, "small-pool", 128)
