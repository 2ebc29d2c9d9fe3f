"""Config dataclasses as flags and YAML: the machinery under `training.config`'s schema.

A field is declared once with its help and allowed values (`opt`); from that come the checks on construction
(`validate_config`), YAML values turned into the field's type (`coerce`, `config_from_dict`), one argparse flag per
field (`add_config_flags`) and the class docstring that ``help()`` shows (`class_doc`). Nothing here knows
`PretrainConfig`: any dataclass whose fields are made with `opt` works.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import reprlib
import textwrap
import typing
from collections.abc import Callable, Mapping
from dataclasses import field, fields

import yaml

from barlowtwins.errors import ConfigError, field_error
from barlowtwins.runtime.console import did_you_mean

# A field name -> its derived default in words, or None where the field's own default is what is shown.
Derived = Callable[[str], "str | None"] | None


def opt(default, help: str, *, ge=None, gt=None, le=None, lt=None, choices=None, ordered: bool = False,
        check=None, why: str = "", describe=None):
    """A config field with its one-sentence ``help`` and its allowed values, declared in one place.

    ``ge``/``gt``/``le``/``lt`` bound a number (every element of a tuple); ``choices`` is a tuple of strings or a
    function returning one; ``ordered`` asks a pair to be (low, high); ``check`` is a function that raises
    `ConfigError` or returns a description of what is allowed when the value is not; ``why`` explains a bound;
    ``describe`` returns one line describing each choice for ``--help`` (default: the choices listed), read when
    the flags are made so that registered entries show.
    """
    return field(default=default, metadata={"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt,
                                            "choices": choices, "ordered": ordered, "check": check, "why": why,
                                            "describe": describe})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(cls, name: str):
    hint = field_types(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return (args[0] if args else hint), type(None) in typing.get_args(hint)


def _check_type(name: str, value, base) -> None:
    def bad(what: str):
        raise field_error(lambda n: f"{n(name)}: {short(value)} is not {what}")

    if typing.get_origin(base) is tuple:
        n = len(typing.get_args(base))
        if not isinstance(value, (tuple, list)) or len(value) != n:
            bad(f"{n} numbers")
        for v in value:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                bad(f"{n} finite numbers")
    elif base is bool:
        if not isinstance(value, bool):
            bad("true or false")
    elif base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            bad("a whole number")
    elif base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            bad("a finite number")
    elif base is str:
        if not isinstance(value, str):
            bad("a string")


def _describe_range(meta: Mapping) -> str:
    parts = []
    for key, word in (("gt", "> "), ("ge", ">= "), ("lt", "< "), ("le", "<= ")):
        if meta.get(key) is not None:
            parts.append(f"{word}{meta[key]}")
    return " and ".join(parts)


def choice_values(meta) -> tuple[str, ...] | None:
    """The allowed values of a field from its metadata (a registry's current names), or None for a free field."""
    choices = (meta or {}).get("choices")
    if choices is None:
        return None
    return tuple(choices() if callable(choices) else choices)


def validate_config(cfg) -> None:
    """Check every field of a config dataclass against its declared type and range: one-line `ConfigError`."""
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        base, optional = _base_type(type(cfg), f.name)
        if value is None:
            if optional:
                continue
            raise field_error(lambda n: f"{n(f.name)} cannot be empty")
        _check_type(f.name, value, base)
        meta = f.metadata
        if not meta:
            continue
        numbers = list(value) if isinstance(value, (tuple, list)) else [value] if base in (int, float) else []
        for v in numbers:
            ok = ((meta["ge"] is None or v >= meta["ge"]) and (meta["gt"] is None or v > meta["gt"])
                  and (meta["le"] is None or v <= meta["le"]) and (meta["lt"] is None or v < meta["lt"]))
            if not ok:
                why = f" ({meta['why']})" if meta.get("why") else ""
                each = "each value of " if len(numbers) > 1 else ""
                shown = " ".join(str(x) for x in value) if isinstance(value, (tuple, list)) else value
                raise field_error(lambda n: f"{each}{n(f.name)} must be {_describe_range(meta)}{why}, got {shown}")
        if meta["ordered"] and value[0] > value[1]:
            low, high = value[1], value[0]
            raise field_error(lambda n: f"{n(f.name)} takes the low value first, got {high} {low}; write "
                              + (f"{n(f.name)} {low} {high}" if n(f.name).startswith("--")
                                 else f"{f.name}=({low}, {high})"))
        if meta["choices"] is not None:
            choices = choice_values(meta)
            assert choices is not None  # None only when meta has no choices; it has, just checked
            if value not in choices:
                listed = ", ".join(choices) if len(choices) <= 12 else "any torchvision classification model name"
                hint = did_you_mean(value, choices) if len(value) <= 100 else ""
                raise ConfigError(f"unknown {f.name} {short(value)}{hint}; choose {listed}")
        if meta["check"] is not None:
            allowed = meta["check"](value)
            if allowed:
                raise field_error(lambda n: f"{n(f.name)} {short(value)} is not valid; use {allowed}")


MAX_YAML_ALIASES = 20  # a config is a few flat fields; more aliases only serve to blow up memory
MAX_YAML_CHARS = 1_000_000


class _BoundedLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses documents with more than `MAX_YAML_ALIASES` aliases (a "billion laughs"
    document expands exponentially when its value is printed or copied)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases = getattr(self, "_aliases", 0) + 1
            if self._aliases > MAX_YAML_ALIASES:
                raise yaml.YAMLError(f"more than {MAX_YAML_ALIASES} aliases")
        return super().compose_node(parent, index)


def short(value, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters without building the whole text (a deeply nested or
    self-referencing value stays cheap)."""
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxtuple, r.maxdict, r.maxstring, r.maxother, r.maxlong = 2, 4, 4, 4, limit, limit, limit
    text = r.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_yaml(text: str, what: str) -> dict:
    """A YAML mapping, with a one-line error naming ``what`` when it is not one (also for a document over
    `MAX_YAML_CHARS` characters or with more than `MAX_YAML_ALIASES` aliases)."""
    if len(text) > MAX_YAML_CHARS:
        raise ConfigError(f"{what} has {len(text)} characters; a config is a short mapping of field: value")
    try:
        data = yaml.load(text, Loader=_BoundedLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or (str(e) if type(e) is yaml.YAMLError else type(e).__name__)
        raise ConfigError(f"cannot read {what}: {problem}{where}; it is not valid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a mapping of field: value")
    return data


def field_types(cls) -> dict[str, type]:
    """The resolved type hints of a config dataclass's fields."""
    return typing.get_type_hints(cls)


def coerce(cls, name: str, value):
    """YAML value -> the field's type (tuples from lists), with a clear error on a mismatch."""
    hint = field_types(cls)[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config field '{name}' cannot be empty")
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    origin = typing.get_origin(base)
    try:
        if origin is tuple:
            items = list(value) if isinstance(value, (list, tuple)) else [value]
            elem = typing.get_args(base)
            if elem and elem[-1] is not Ellipsis and len(items) != len(elem):
                raise ValueError(f"expected {len(elem)} values")
            if any(isinstance(v, (dict, list, bool)) for v in items):
                raise ValueError("expected numbers")
            return tuple(float(v) for v in items)
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "yes", "1", "on"):
                return True
            if str(value).lower() in ("false", "no", "0", "off"):
                return False
            raise ValueError("expected true or false")
        if base is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("expected a whole number")
            if isinstance(value, (dict, list)):
                raise ValueError("expected a whole number")
            return int(value)
        if base is float:
            if isinstance(value, (dict, list)):
                raise ValueError("expected a number")
            return float(value)
        if isinstance(value, (dict, list)):
            raise ValueError("expected a single value")
        return str(value)
    except (TypeError, ValueError, OverflowError) as e:
        raise ConfigError(f"config field '{name}': {short(value)} is not valid ({str(e)[:120]})") from None


def config_from_dict(values: dict, cls, base=None, command: str = "barlowtwins pretrain"):
    """Apply ``values`` onto ``base`` (default: the dataclass defaults) with type checks.

    The values are taken as they are: a ``preset`` among them is a label (a saved config read back keeps what it
    trained with); `resolve_values` merges a preset's values first, as ``barlowtwins pretrain`` does."""
    valid = [f.name for f in fields(cls)]
    unknown = sorted((k[:100] if isinstance(k, str) else short(k) for k in values if k not in valid), key=str)
    if unknown:
        raise ConfigError(f"unknown config field '{unknown[0]}'{did_you_mean(unknown[0], valid)}"
                          f"{f' (and {len(unknown) - 1} more)' if len(unknown) > 1 else ''}; "
                          f"see '{command} --help'")
    cfg = base if base is not None else cls()
    return dataclasses.replace(cfg, **{k: coerce(cls, k, v) for k, v in values.items()})


def add_config_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (), derived: Derived = None) -> None:
    """One flag per field of the dataclass ``cls``; every default is None so that only flags the user gave override
    the YAML. ``derived``: as for `class_doc`."""
    group = parser.add_argument_group("config fields (override the preset and --config)")
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        hint = field_types(cls)[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if args else hint
        default = f.default if f.default is not dataclasses.MISSING else None
        meta: Mapping[str, typing.Any] = f.metadata or {}
        bounds = _describe_range(meta) if meta else ""
        names = choice_values(meta)
        listed = f"; one of: {', '.join(names)}" if names and len(names) <= 12 else ""
        if meta.get("describe"):
            listed = f": {meta['describe']()}"
        words = derived(f.name) if derived is not None and default is None else None
        if words is not None:
            shown = f" (default: {words})"
        elif "default" in meta.get("help", ""):  # the help already says it, in words
            shown = ""
        else:
            shown = f" (default: {default})"
        help_text = (meta.get("help", "") + (f"; {bounds}" if bounds else "") + listed + shown
                     ).strip().replace("%", "%%")
        if base is bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                               help=help_text)
        elif typing.get_origin(base) is tuple:
            n = len(typing.get_args(base))
            group.add_argument(flag, dest=f.name, type=float, nargs=n, default=None, metavar="X", help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=str if base not in (int, float) else base, default=None,
                               help=help_text)


def _field_doc(cls, f, derived: Derived) -> str:
    """One field's entry in the generated class docstring: name, type, default, help."""
    hint = field_types(cls)[f.name]
    kind = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    kind = kind or str(hint).replace("typing.", "")
    meta = f.metadata or {}
    default = f.default
    words = derived(f.name) if derived is not None and default is None else None
    shown = words if words is not None else repr(default)
    bounds = _describe_range(meta) if meta else ""
    listed = choice_values(meta)  # the registries' names at import time (an entry registered later is valid too)
    text = meta.get("help", "") + (f"; {bounds}" if bounds else "") + (
        f"; one of: {', '.join(listed)}" if listed and len(listed) <= 12 and not all(
            c in meta.get("help", "") for c in listed) else "")
    head = f"{f.name}: {kind} = {shown}"
    return head + "\n" + textwrap.fill(text, 112, initial_indent="        ", subsequent_indent="        ")


def class_doc(cls, derived: Derived = None, command: str = "barlowtwins pretrain") -> str:
    """The class docstring with every field's help (from its metadata), so that ``help(cls)`` shows it.

    ``derived(name)`` returns, in words, the default of a field whose default ``None`` means "derived by the run"
    (or None to show ``None``)."""
    intro = inspect.cleandoc(cls.__doc__ or "")
    lines = [intro, "", f"Fields ({len(fields(cls))}; each is also the flag --name-with-dashes of "
             f"{command}):", ""]
    lines += ["    " + _field_doc(cls, f, derived) for f in fields(cls)]
    return "\n".join(lines) + "\n"
