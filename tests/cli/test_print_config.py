"""`pretrain --print-config` shows every value the run uses, and `--help` says each default once, in words."""

import argparse

import yaml

from barlowtwins.cli import main
from barlowtwins.training.config import add_config_flags, config_from_dict
from barlowtwins.transforms.spec import CLI_SETTINGS, augment_config


def _printed(capsys, *flags) -> str:
    assert main(["pretrain", "--print-config", *flags]) == 0
    return capsys.readouterr().out


def test_print_config_resolves_every_augmentation_field(capsys):
    out = _printed(capsys, "--dataset", "fashion-mnist", "--hue", "0.05")
    values = yaml.safe_load(out)
    assert all(values[n] is not None for n in CLI_SETTINGS)
    expected = augment_config(28, 1, hue=0.05)
    assert values["saturation"] == expected.saturation == 0.0  # 1-channel: colour-only steps off
    assert values["blur_p"] == list(expected.blur_p)
    assert values["hue"] == 0.05
    lines = {line.split(":")[0]: line for line in out.splitlines() if not line.startswith("#")}
    assert "derived" in lines["saturation"]
    assert "derived" not in lines["hue"]  # set by a flag
    config_from_dict(values)  # the printed text is valid input for --config


def _help() -> str:
    p = argparse.ArgumentParser(prog="x")
    add_config_flags(p)
    return " ".join(p.format_help().split("config fields", 1)[1].split())  # the flags' help, not the usage


def test_help_names_derived_defaults_in_words_and_each_default_once():
    text = _help()
    assert "(default: from the image size: 0.08, 1; 0.2, 1 at 32 px and below)" in text
    assert "0 for 1-channel images" in text
    for n in CLI_SETTINGS:
        part = text.split("--" + n.replace("_", "-") + " ", 1)[1].split(" --", 1)[0]
        assert "(default: from the image size" in part, n
        assert "default: None" not in part, n
    for flag in ("--knn-data-dir", "--knn-val-split", "--no-strict-data"):
        part = text.split(flag + " ", 1)[1].split(" --", 1)[0]
        assert part.count("default") == 1, (flag, part)
