"""Config fields: one declaration of type, range and help per field; every bad value is one line before any
work; closest-name suggestions; fuzzed config dicts and command lines never give a traceback."""

import dataclasses
import math

import pytest
from conftest import says_both
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from barlowtwins.cli import main
from barlowtwins.errors import ConfigError
from barlowtwins.training.config import PretrainConfig, config_from_dict, resolve_values


def test_every_field_has_a_one_sentence_help_in_the_flag_list(capsys):
    for f in dataclasses.fields(PretrainConfig):
        help_text = f.metadata.get("help", "")
        assert len(help_text.split()) >= 3 and help_text.replace("e.g. ", "").count(". ") == 0, f.name
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines (also at hyphens)
    for f in dataclasses.fields(PretrainConfig):
        if f.name != "preset":
            assert "".join(f.metadata["help"].split()) in text, f.name
    size_help = "side in pixels of the square crops the network sees; >= 8 and <= 4096 (default: 224)"
    assert "".join(size_help.split()) in text


@pytest.mark.parametrize("kw,message", [
    (dict(lambd=-1), "--lambd must be >= 0"),
    (dict(eta=0), "--eta must be > 0"),
    (dict(momentum=2), "--momentum must be >= 0 and < 1"),
    (dict(interpolation="cubicx"), "unknown interpolation 'cubicx' (did you mean bicubic?)"),
    (dict(log_every=0), "--log-every must be >= 1"),
    (dict(image_size=0), "--image-size must be >= 8"),
    (dict(image_size=1), "--image-size must be >= 8"),
    (dict(lr_weights=-0.1), "--lr-weights must be > 0"),
    (dict(lr_biases=0), "--lr-biases must be > 0"),
    (dict(crop_scale=(2, 3)), "each value of --crop-scale must be > 0 and <= 1"),
    (dict(crop_scale=(0.9, 0.1)), "--crop-scale takes the low value first"),
    (dict(hflip_p=1.5), "--hflip-p must be >= 0 and <= 1"),
    (dict(blur_p=(0.5, -0.1)), "each value of --blur-p must be >= 0 and <= 1"),
    (dict(hue=2), "--hue must be >= 0 and <= 0.5"),
    (dict(warmup_epochs=-1), "--warmup-epochs must be >= 0"),
    (dict(checkpoint_minutes=-5), "--checkpoint-minutes must be >= 0"),
    (dict(max_steps=0), "--max-steps must be >= 1"),
    (dict(std=(0, 0, 0)), "each value of --std must be > 0"),
    (dict(keep_checkpoints=0), "--keep-checkpoints must be >= 1"),
    (dict(backbone="resnet19"), "unknown backbone 'resnet19' (did you mean resnet18?)"),
    (dict(dataset="imagenet"), "unknown dataset 'imagenet'"),
    (dict(lr_weights=math.nan), "--lr-weights: nan is not a finite number"),
    (dict(epochs=2.5), "--epochs: 2.5 is not a whole number"),
    (dict(device="gpu"), "--device 'gpu' is not valid"),
    (dict(out=" "), "--out ' ' is not valid"),
])
def test_values_are_range_checked(kw, message):
    with pytest.raises(ConfigError) as e:
        PretrainConfig(**kw)
    says_both(e.value, message)


@pytest.mark.parametrize("kw,message", [
    (dict(multicrop_count=2, multicrop_size=64, image_size=32),
     "--multicrop-size 64 is not smaller than --image-size 32"),
    (dict(multicrop_count=2, multicrop_size=1), "--multicrop-size 1 is below 8 px"),
    (dict(progressive_start=16), "--progressive-start 16 needs --progressive-epochs"),
    (dict(progressive_epochs=3), "--progressive-epochs 3 needs --progressive-start"),
])
def test_settings_that_only_work_together_are_refused_on_construction(kw, message):
    with pytest.raises(ConfigError) as e:
        PretrainConfig(**kw)
    says_both(e.value, message)
    with pytest.raises(ConfigError) as e:
        config_from_dict(kw)
    says_both(e.value, message)


def test_unknown_keys_and_flags_suggest_the_closest(capsys):
    with pytest.raises(ConfigError, match=r"unknown config field 'epoch' \(did you mean epochs\?\)"):
        config_from_dict({"epoch": 3})
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--lr-weight", "0.1"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == "barlowtwins pretrain: error: unrecognized arguments: --lr-weight 0.1 (did you mean --lr-weights?)"


def test_yaml_and_binary_config_files(tmp_path):
    (tmp_path / "bad.yaml").write_text("epochs: [1\nbatch_size: 4\n")
    with pytest.raises(ConfigError, match=r"not valid YAML") as e:
        resolve_values(None, str(tmp_path / "bad.yaml"), {})
    assert "line" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text"):
        resolve_values(None, str(tmp_path / "bin.yaml"), {})
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        resolve_values(None, str(tmp_path / "list.yaml"), {})


FIELDS = [f.name for f in dataclasses.fields(PretrainConfig)]
values = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                   st.text(max_size=12), st.lists(st.floats(-5, 5), max_size=4),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS + ["epoch", "lr", "bogus"]), values, max_size=6))
def test_fuzz_config_dicts(values):
    """Any mapping either gives a valid config or one ConfigError line."""
    try:
        cfg = config_from_dict(values)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e)
    else:
        assert isinstance(cfg, PretrainConfig)


FLAGS = ["--" + n.replace("_", "-") for n in FIELDS if n != "preset"] + ["--epoch", "--no-progress", "--lr"]
tokens = st.one_of(st.sampled_from(FLAGS), st.sampled_from(["0", "-1", "1e6", "nan", "inf", "0.5", "x", "2", "3",
                                                             "resnet19", "cubicx", ""]), st.text(max_size=6))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(tokens, max_size=8))
def test_fuzz_the_command_line(capsys, argv):
    """Any command line ends with status 0 (a valid config, printed) or 2 and one error line: no traceback."""
    try:
        code = main(["pretrain", *argv, "--print-config"])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_a_yaml_bomb_is_one_line_and_cheap(tmp_path):
    """A "billion laughs" document: nine levels of ten aliases each would be 10^9 strings once printed or copied.
    Refused for its aliases; a value built of many shared references is never expanded to be shown."""
    lines = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i, name in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{name}: &{name} [{', '.join('*' + prev for _ in range(10))}]")
    lines.append("width: *i")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match="aliases") as e:
        resolve_values(None, str(bomb), {})
    assert "\n" not in str(e.value)
    # below the alias limit, a deeply shared value is still only shown in part
    nested = [["x"] * 10] * 10
    for _ in range(7):
        nested = [nested] * 10
    with pytest.raises(ConfigError) as e:
        config_from_dict({"width": nested})
    assert len(str(e.value)) < 300


def test_an_oversized_config_file_is_one_line(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("seed: 1\n" + "# padding\n" * 200_000)
    with pytest.raises(ConfigError, match="characters"):
        resolve_values(None, str(big), {})


def test_a_preset_named_in_python_applies_it_and_the_given_fields_win():
    """``PretrainConfig(preset="cifar10")`` used to be a label only: the ImageNet defaults trained."""
    cfg = PretrainConfig(preset="cifar10", epochs=5, batch_size=2048)  # 2048 is the default, given on purpose
    assert cfg == config_from_dict(resolve_values("cifar10", None, {"epochs": 5, "batch_size": 2048}))  # the CLI's
    assert (cfg.dataset, cfg.image_size, cfg.stem, cfg.epochs, cfg.batch_size) == ("cifar10", 32, "small", 5, 2048)
    assert PretrainConfig(preset="fashion-mnist").crop_scale == (0.4, 1.0)  # coerced as from YAML
    # a config made from another one keeps its values: the preset is not applied again
    again = dataclasses.replace(cfg, epochs=7)
    assert again.epochs == 7 and again.batch_size == 2048 and again.image_size == 32
    assert config_from_dict(cfg.to_dict()) == cfg
    assert dataclasses.replace(PretrainConfig(preset="cifar10"), image_size=48).image_size == 48
    with pytest.raises(ConfigError, match="unknown preset 'cifar11'"):
        PretrainConfig(preset="cifar11")


def test_help_of_the_config_class_shows_every_fields_help():
    """``help(PretrainConfig)`` listed 77 fields without their meaning; the class docstring now carries it."""
    import pydoc

    text = " ".join(pydoc.render_doc(PretrainConfig, renderer=pydoc.plaintext).split())
    for f in dataclasses.fields(PretrainConfig):
        assert f"{f.name}:" in text, f.name
        assert " ".join(f.metadata["help"].split())[:60] in text, f.name


def test_config_yaml_holds_the_augmentation_values_that_ran(tmp_path):
    """The augmentation fields left unset were saved as null: config.yaml now holds the values derived from the
    image size and channels, and read back (``--config``) they make the same views."""
    import yaml

    from barlowtwins.training.config import save_config
    from barlowtwins.transforms.spec import CLI_SETTINGS, augment_config

    for cfg, channels in ((PretrainConfig(dataset="fashion-mnist", image_size=28, hue=0.05), 1),
                          (PretrainConfig(dataset="images", image_size=96), 3)):
        save_config(cfg, tmp_path / "config.yaml")
        saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
        assert all(saved[n] is not None for n in CLI_SETTINGS), saved
        aug = augment_config(cfg.image_size, channels, **cfg.augment_overrides())
        assert saved["blur_p"] == list(aug.blur_p) and saved["mean"] == list(aug.mean) and saved["hue"] == aug.hue
        back = config_from_dict(saved)
        assert augment_config(back.image_size, channels, **back.augment_overrides()) == aug
        assert {k: v for k, v in back.to_dict().items() if k not in CLI_SETTINGS} == \
            {k: v for k, v in cfg.to_dict().items() if k not in CLI_SETTINGS}
    assert saved["saturation"] == 0.2
    save_config(PretrainConfig(dataset="fashion-mnist", image_size=28), tmp_path / "gray.yaml")
    assert yaml.safe_load((tmp_path / "gray.yaml").read_text())["saturation"] == 0.0  # one channel: no colour jitter
