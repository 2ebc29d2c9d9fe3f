"""The projector: its spec and its layers (the paper's MLP)."""

import pytest
import torch
from torch import nn

from barlowtwins.errors import ConfigError
from barlowtwins.models.projector import MAX_PROJECTOR_SIZE, Projector, parse_projector_spec


@pytest.mark.parametrize("spec,sizes", [("8192-8192-8192", [8192, 8192, 8192]), ("256", [256]),
                                        (" 64-32 ", [64, 32]), ([16, 8], [16, 8])])
def test_projector_spec_parsing(spec, sizes):
    assert parse_projector_spec(spec) == sizes


@pytest.mark.parametrize("spec", ["", "8192-", "8192-abc", "0-64", "-5", "1.5-3", "8192--8192"])
def test_projector_spec_errors(spec):
    with pytest.raises(ConfigError, match="malformed projector spec"):
        parse_projector_spec(spec)


def test_projector_layers_follow_the_paper():
    p = Projector(512, "64-64-32")
    kinds = [type(m).__name__ for m in p]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    linears = [m for m in p if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(512, 64), (64, 64), (64, 32)]
    assert all(m.bias is None for m in linears)
    assert p.out_features == 32
    no_bn = Projector(512, "64-32", batch_norm=False)
    assert [type(m).__name__ for m in no_bn] == ["Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("spec", [f"64-{MAX_PROJECTOR_SIZE + 1}", [MAX_PROJECTOR_SIZE + 1], "1000000-8"])
def test_projector_sizes_are_bounded(spec):
    with torch.device("meta"), pytest.raises(ConfigError, match=f"at most {MAX_PROJECTOR_SIZE}"):
        Projector(64, spec)
    with torch.device("meta"):
        assert Projector(8, [MAX_PROJECTOR_SIZE]).out_features == MAX_PROJECTOR_SIZE


@pytest.mark.parametrize("spec", [["abc", 8], [True, 8], [8.5]])
def test_projector_list_spec_of_other_types_is_one_line(spec):
    with pytest.raises(ConfigError, match="malformed projector spec.*integers"):
        parse_projector_spec(spec)
