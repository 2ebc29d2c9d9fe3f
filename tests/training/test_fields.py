"""The config-field machinery on its own: a small dataclass that is not `PretrainConfig` gets checks, YAML values,
flags and a generated docstring from its `opt` declarations alone."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from barlowtwins.errors import ConfigError
from barlowtwins.training import fields as F


@dataclass
class Toy:
    """A toy config."""

    name: str = F.opt("a", "a name", choices=("a", "b"))
    count: int = F.opt(3, "how many", ge=1, le=10, why="a toy bound")
    rate: float = F.opt(0.5, "a rate", gt=0)
    pair: tuple[float, float] | None = F.opt(None, "a low-high pair", ordered=True, ge=0)
    flag_on: bool = F.opt(False, "a switch")
    odd: int = F.opt(1, "an odd number", check=lambda v: None if v % 2 else "an odd number")

    def __post_init__(self):
        F.validate_config(self)


def test_defaults_pass_and_each_declared_bound_is_one_line():
    Toy()
    cases = [
        (dict(name="c"), "unknown name 'c'; choose a, b"),
        (dict(count=0), "count must be >= 1 and <= 10 (a toy bound), got 0"),
        (dict(count=2.5), "count: 2.5 is not a whole number"),
        (dict(count=True), "count: True is not a whole number"),
        (dict(rate=0.0), "rate must be > 0, got 0.0"),
        (dict(rate=float("nan")), "rate: nan is not a finite number"),
        (dict(pair=(0.9, 0.1)), "pair takes the low value first, got 0.9 0.1; write pair=(0.1, 0.9)"),
        (dict(pair=(-1.0, 1.0)), "each value of pair must be >= 0, got -1.0 1.0"),
        (dict(flag_on=1), "flag_on: 1 is not true or false"),
        (dict(odd=4), "odd 4 is not valid; use an odd number"),
        (dict(name=None), "name cannot be empty"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ConfigError) as e:
            Toy(**kwargs)
        assert str(e.value) == message, kwargs  # Python's names, for a program


def test_each_field_error_also_carries_the_command_lines_spelling():
    """The CLI prints ``cli``: the same message with the flags (``--flag-on``) where Python names the field."""
    for kwargs, said in [(dict(flag_on=1), "--flag-on: 1 is not true or false"),
                         (dict(pair=(0.9, 0.1)), "--pair takes the low value first, got 0.9 0.1; write --pair 0.1 0.9"),
                         (dict(count=0), "--count must be >= 1 and <= 10 (a toy bound), got 0"),
                         (dict(name=None), "--name cannot be empty")]:
        with pytest.raises(ConfigError) as e:
            Toy(**kwargs)
        assert e.value.cli == said


def test_yaml_values_are_coerced_to_the_field_types():
    cfg = F.config_from_dict({"count": 4.0, "pair": [0, 1], "flag_on": "yes", "rate": "0.25"}, Toy)
    assert (cfg.count, cfg.pair, cfg.flag_on, cfg.rate) == (4, (0.0, 1.0), True, 0.25)
    assert isinstance(cfg.count, int) and isinstance(cfg.pair, tuple)
    with pytest.raises(ConfigError, match=r"config field 'count': 4.5 is not valid \(expected a whole number\)"):
        F.config_from_dict({"count": 4.5}, Toy)
    with pytest.raises(ConfigError, match=r"unknown config field 'cont' \(did you mean count\?\); see 'toy --help'"):
        F.config_from_dict({"cont": 1}, Toy, command="toy")
    base = Toy(count=7)
    assert F.config_from_dict({"rate": 2}, Toy, base=base).count == 7


def test_flags_override_only_what_is_given():
    parser = argparse.ArgumentParser()
    F.add_config_flags(parser, Toy, skip=("odd",), derived=lambda n: "from the data" if n == "pair" else None)
    args = vars(parser.parse_args(["--count", "5", "--pair", "0.1", "0.2", "--flag-on"]))
    assert args == {"name": None, "count": 5, "rate": None, "pair": [0.1, 0.2], "flag_on": True}
    text = parser.format_help()
    assert "--odd" not in text
    assert "(default: from the data)" in text and "one of: a, b" in text and ">= 1 and <= 10" in text


def test_the_class_docstring_lists_every_field_with_its_help():
    text = F.class_doc(Toy, derived=lambda n: "derived" if n == "pair" else None, command="toy")
    assert text.startswith("A toy config.\n")
    assert "Fields (6; each is also the flag --name-with-dashes of toy):" in text
    assert "    count: int = 3\n        how many; >= 1 and <= 10" in text
    assert "    pair: tuple[float, float] | None = derived\n" in text
    assert "    name: str = 'a'\n        a name; one of: a, b" in text


def test_short_and_parse_yaml_stay_cheap_and_one_line():
    nested: list = []
    nested.append(nested)
    assert len(F.short(nested)) <= 60 and len(F.short("x" * 10_000)) <= 60
    assert F.parse_yaml("", "t") == {}
    with pytest.raises(ConfigError, match="t must be a mapping of field: value"):
        F.parse_yaml("- 1\n- 2\n", "t")
    with pytest.raises(ConfigError, match=r"cannot read t: .* at line 1, column \d+; it is not valid YAML"):
        F.parse_yaml("a: [1, 2", "t")
    bomb = "a: &a [1]\n" + "".join(f"b{i}: *a\n" for i in range(F.MAX_YAML_ALIASES + 1))
    with pytest.raises(ConfigError, match="aliases"):
        F.parse_yaml(bomb, "t")
