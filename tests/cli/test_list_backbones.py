"""`barlowtwins list-backbones`: the names --backbone accepts, filtered by a shell pattern; timm's only when it
is installed, which the listing then says."""

from types import SimpleNamespace

import pytest

from barlowtwins.cli import list_backbones as command
from barlowtwins.cli import main
from barlowtwins.models import backbones
from barlowtwins.models.backbones import TIMM_PREFIX


@pytest.fixture
def no_timm(monkeypatch):
    monkeypatch.setattr(backbones, "timm_module", lambda: None)
    monkeypatch.setattr(command, "timm_module", lambda: None)


def _listed(capsys, *args) -> list[str]:
    assert main(["list-backbones", *args]) == 0
    return capsys.readouterr().out.splitlines()


def test_a_pattern_with_wildcards_is_a_shell_pattern(no_timm, capsys):
    names = _listed(capsys, "resnet*")
    assert names[-1].startswith("(timm is not installed")
    assert {"resnet18", "resnet50", "resnet152"} <= set(names[:-1])
    assert all(n.startswith("resnet") for n in names[:-1]) and "wide_resnet50_2" not in names


def test_a_pattern_without_wildcards_matches_names_containing_it(no_timm, capsys):
    names = _listed(capsys, "resnet50")[:-1]
    assert {"resnet50", "wide_resnet50_2"} <= set(names) and all("resnet50" in n for n in names)


def test_without_a_pattern_every_torchvision_model_is_listed(no_timm, capsys):
    names = _listed(capsys)[:-1]
    assert len(names) > 40 and len(set(names)) == len(names)
    assert {"resnet18", "vit_b_16", "convnext_tiny"} <= set(names)


def test_no_match_is_one_line_and_exit_2(no_timm, capsys):
    assert main(["list-backbones", "resnet9000*"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "barlowtwins list-backbones: error: no backbone matches 'resnet9000*'; try a shorter pattern, " \
                  "e.g. resnet"


def test_timm_models_are_listed_with_their_prefix_when_timm_is_there(monkeypatch, capsys):
    fake = SimpleNamespace(list_models=lambda pattern: [n for n in ("resnet10t", "vit_tiny") if
                                                        __import__("fnmatch").fnmatchcase(n, pattern)])
    monkeypatch.setattr(backbones, "timm_module", lambda: fake)
    monkeypatch.setattr(command, "timm_module", lambda: fake)
    names = _listed(capsys, "resnet1*")
    assert "resnet18" in names and TIMM_PREFIX + "resnet10t" in names and TIMM_PREFIX + "vit_tiny" not in names
    assert not any(n.startswith("(timm") for n in names)  # no note: it is installed
    assert _listed(capsys, TIMM_PREFIX + "vit*") == [TIMM_PREFIX + "vit_tiny"]
