"""benchmarks/fashion_mnist.py: every ablation the script offers is a valid run on top of the preset, and each one
changes the config it claims to change (a misspelt field would fail here, not after 15 minutes of pretraining)."""

from __future__ import annotations

import pytest
from fashion_mnist import ABLATIONS, parse_set, projector_variants

from barlowtwins.training.config import config_from_dict, preset_values

VARIANTS = [(arm, name, extra) for arm, variants in ABLATIONS.items() for name, extra in variants]


@pytest.mark.parametrize("arm,name,extra", VARIANTS, ids=[f"{a}:{n}" for a, n, _ in VARIANTS])
def test_each_ablation_is_a_valid_config_that_differs_from_the_preset(arm, name, extra):
    preset = config_from_dict(preset_values("fashion-mnist"))
    cfg = config_from_dict({**preset_values("fashion-mnist"), **extra})
    for key, value in extra.items():
        assert getattr(cfg, key) == value, (arm, key)
    assert any(getattr(cfg, k) != getattr(preset, k) for k in extra), f"{name} is the preset itself"


def test_projector_variants_and_set_overrides():
    (name, extra), = projector_variants([512])
    assert config_from_dict({**preset_values("fashion-mnist"), **extra}).projector == "512-512-512"
    assert parse_set(["mix-weight=0.5", "width=32"]) == {"mix_weight": 0.5, "width": 32}
    with pytest.raises(SystemExit, match="key=value"):
        parse_set(["width"])
