"""The paper's two asymmetric views, declared once: the ordered ops, their settings and their random numbers.

    >>> [op.name for op in SPEC.ops]
    ['crop', 'flip', 'jitter', 'gray', 'blur', 'solarize']
    >>> SPEC.columns["jitter"]["order"]                 # the uniform columns of the jitter's op order
    slice(24, 28, None)
    >>> cfg = augment_config(image_size=224)            # an AugmentConfig: one field per `Setting`
    >>> cfg.prob("blur", view=1)                        # 0.1: the blur's probability in view 2

Each `Op` names the settings it reads (`Setting`: a config field with its default, its adapted defaults for
small or one-channel images and, where it is per view, a (view 1, view 2) pair) and the uniforms it consumes
per sample and view (``columns``: (meaning, count) pairs). From the ordered list of ops follow:

- the column layout of the uniforms (`Spec.columns`, `Spec.num_uniforms`): the ops' columns, in order. The
  layout of the paper's ops is the one runs have always drawn (crop 0-21, flip 22, jitter 23-31, gray 32,
  blur 33-34, solarise 35), so the same seed gives the same views;
- the config class (`Spec.config_class`): `AugmentConfig` has exactly the settings of the ops (plus the
  view size and normalisation), with their defaults, and `augment_config` adapts them. It is written out as a
  class (for readers, IDEs and type checkers) and `Spec` checks at import that its fields are the settings,
  with their defaults, in order; a spec of other ops (a copy with an extra op) gets a generated class;
- the random parameters (`params.py`, one draw per op, keyed by op name);
- the executors (PIL per image in `pil.py`, batched tensors in `tensor.py`, per-sample device crops in
  `device.py`, torchvision's random transforms in `two_view.py`): each a dict op name -> function, run in the
  spec's order by `run_ops`.

A new op (a vertical flip, say) is one `Op` here and its settings as fields of `AugmentConfig`, a draw in
`params.py` unless it is a plain coin flip, and one function in each executor; `tests/transforms/test_spec.py`
checks every executor against torchvision op by op, and that an extra op flows through. Geometry ops come before
colour ops. An op added at the end of the list leaves the columns, hence the random parameters of every other op,
as they were (with the counter-based uniforms of `params.view_params`, which every data path uses; a
``torch.Generator`` draws its rows K wide, so there a new column changes every number); one inserted before others
moves their columns, so the same seed then draws other views.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, InitVar, asdict, dataclass, field, fields, make_dataclass
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

IMAGENET_MEAN = (0.485, 0.456, 0.406)


IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Setting:
    """One field of the augmentation config.

    ``small``: the default at 32 px and below (None: unchanged); ``mono``: the default for one-channel images;
    ``sized``: the default as a function of the view size; ``per_view``: the value is a (view 1, view 2) pair;
    ``cli``: a pretraining flag can override it (``PretrainConfig.augment_overrides``).
    """

    name: str
    default: Any
    small: Any = None
    mono: Any = None
    sized: Callable[[int], Any] | None = None
    per_view: bool = False
    cli: bool = True


@dataclass(frozen=True)
class Op:
    """One step of a view. ``kind``: "geometry" (needs the full image: crop, flip) or "colour" (runs on the
    view). ``prob``: the setting holding its probability (the draw of column ``apply``; None: always applied).
    ``columns``: (meaning, count) of the uniforms it reads per sample and view, in order. ``outputs``: the
    names of its random parameters (`params.ViewParams`); the first is the op's on/off flag when ``prob`` is set.
    """

    name: str
    kind: str
    settings: tuple[Setting, ...]
    columns: tuple[tuple[str, int], ...]
    outputs: tuple[str, ...]
    prob: str | None = None


def blur_kernel_for(image_size: int) -> int:
    """The default blur kernel at a view size (BYOL's: about a tenth of the size, odd)."""
    return _blur_kernel(image_size)


def _blur_kernel(image_size: int) -> int:
    return max(3, int(0.1 * image_size) // 2 * 2 + 1)  # odd; about a tenth of the image size (BYOL)


KINDS = ("geometry", "colour")  # in this order: the geometry ops need the full image, the colour ops the view
CROP_TRIES = 10  # torchvision's RandomResizedCrop: ten boxes of random area and aspect, the first that fits


OPS: tuple[Op, ...] = (
    Op("crop", "geometry",
       (Setting("crop_scale", (0.08, 1.0), small=(0.2, 1.0)), Setting("crop_ratio", (3 / 4, 4 / 3), cli=False),
        Setting("interpolation", "bicubic")),
       columns=(("area", CROP_TRIES), ("ratio", CROP_TRIES), ("top", 1), ("left", 1)), outputs=("box",)),
    Op("flip", "geometry", (Setting("hflip_p", 0.5),), columns=(("apply", 1),), outputs=("flip",), prob="hflip_p"),
    Op("jitter", "colour",
       (Setting("jitter_p", 0.8), Setting("brightness", 0.4), Setting("contrast", 0.4),
        Setting("saturation", 0.2, mono=0.0), Setting("hue", 0.1, mono=0.0)),
       # order: a random permutation of brightness, contrast, saturation, hue; factors: one per op (hue: turns)
       columns=(("apply", 1), ("order", 4), ("factors", 4)), outputs=("jitter", "order", "factors"),
       prob="jitter_p"),
    Op("gray", "colour", (Setting("grayscale_p", 0.2, mono=0.0),), columns=(("apply", 1),), outputs=("gray",),
       prob="grayscale_p"),
    Op("blur", "colour",
       (Setting("blur_p", (1.0, 0.1), small=(0.0, 0.0), per_view=True), Setting("blur_sigma", (0.1, 2.0)),
        Setting("blur_kernel", 23, sized=_blur_kernel, cli=False)),
       columns=(("apply", 1), ("sigma", 1)), outputs=("blur", "sigma"), prob="blur_p"),
    Op("solarize", "colour", (Setting("solarize_p", (0.0, 0.2), per_view=True),), columns=(("apply", 1),),
       outputs=("solarize",), prob="solarize_p"),
)

# Settings of the whole view rather than of one op: its size (first) and its normalisation (last).
VIEW_SIZE = Setting("image_size", 224, cli=False)
NORMALISATION = (Setting("mean", IMAGENET_MEAN), Setting("std", IMAGENET_STD))


class _ConfigMethods:
    """Methods of every config class (`Spec.config_class`): `AugmentConfig`, and the classes generated for other
    specs."""

    spec: Spec

    def prob(self, op: str, view: int) -> float:
        """The probability of op ``op`` in view ``view`` (0 or 1); 1.0 for an op without one."""
        name = self.spec.op(op).prob
        if name is None:
            return 1.0
        value = getattr(self, name)
        return value[view] if self.spec.setting(name).per_view else value

    def to_dict(self) -> dict:
        # every config class is a frozen dataclass (checked by `_check_config_class`, or made by make_dataclass)
        values = asdict(cast("DataclassInstance", self))
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}


@dataclass(frozen=True)
class AugmentConfig(_ConfigMethods):
    """Settings of the two views: the view size, one field per setting of the ops of `SPEC` (crop, flip, jitter,
    gray, blur, solarize), in their order, and the normalisation; per-view settings are (view 1, view 2) pairs.
    Make one with `augment_config` (the defaults adapted to the image size and channel count). The fields are the
    spec's `Setting` entries, with the same defaults: `Spec` checks it at import."""

    image_size: int = 224
    # crop
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    interpolation: str = "bicubic"
    # flip
    hflip_p: float = 0.5
    # jitter
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    hue: float = 0.1
    # gray
    grayscale_p: float = 0.2
    # blur
    blur_p: tuple[float, float] = (1.0, 0.1)
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 23
    # solarize
    solarize_p: tuple[float, float] = (0.0, 0.2)
    # normalisation
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD


@dataclass(frozen=True, eq=False)
class Spec:
    """The ordered ops of a view and everything derived from them (see the module docstring). ``written_config``:
    a config class written out for these ops (`AugmentConfig` for `SPEC`), checked against their settings and
    then the spec's ``config_class``; None: one is generated."""

    ops: tuple[Op, ...]
    config_name: str = "AugmentConfig"
    columns: Mapping[str, Mapping[str, slice]] = field(init=False, repr=False)
    num_uniforms: int = field(init=False)
    settings: tuple[Setting, ...] = field(init=False, repr=False)
    config_class: type = field(init=False, repr=False)
    written_config: InitVar[type | None] = None

    def __post_init__(self, written_config: type | None):
        names = [op.name for op in self.ops]
        if len(set(names)) != len(names):
            raise ValueError(f"op names must be unique, got {names}")
        columns: dict[str, dict[str, slice]] = {}
        start = 0
        for op in self.ops:
            columns[op.name] = {}
            for meaning, count in op.columns:
                columns[op.name][meaning] = slice(start, start + count)
                start += count
            if op.prob is not None and "apply" not in columns[op.name]:
                raise ValueError(f"op '{op.name}' has a probability but no 'apply' column")
        kinds = [op.kind for op in self.ops]
        if not set(kinds) <= set(KINDS):
            raise ValueError(f"an op's kind is one of {KINDS}, got {list(zip(names, kinds))}")
        if kinds != sorted(kinds, key=KINDS.index):
            raise ValueError(f"the geometry ops must come before the colour ops, got {list(zip(names, kinds))}")
        settings = (VIEW_SIZE, *(s for op in self.ops for s in op.settings), *NORMALISATION)
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "num_uniforms", start)
        object.__setattr__(self, "settings", settings)
        if written_config is not None:
            _check_config_class(written_config, settings)
            if vars(written_config).get("spec", self) is not self:
                raise ValueError(f"{written_config.__name__} is the config class of another spec already")
            written_config.spec = self  # type: ignore[attr-defined]
            object.__setattr__(self, "config_class", written_config)
            return
        cls = make_dataclass(self.config_name, [(s.name, Any, field(default=s.default)) for s in settings],
                             bases=(_ConfigMethods,), frozen=True, namespace={"spec": self})
        cls.__module__ = __name__  # as `AugmentConfig`'s
        cls.__doc__ = (f"Settings of the two views, one field per setting of the ops {names}; per-view settings "
                       "are (view 1, view 2) pairs. Make one with `Spec.config`.")
        object.__setattr__(self, "config_class", cls)

    def op(self, name: str) -> Op:
        for op in self.ops:
            if op.name == name:
                return op
        raise KeyError(f"no op '{name}' in the spec; ops: {[op.name for op in self.ops]}")

    def setting(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)

    def config(self, image_size: int = 224, channels: int = 3, **overrides):
        """The spec's config with defaults adapted to the image size and channel count; ``overrides`` win."""
        values = {}
        for s in self.settings:
            value = s.sized(image_size) if s.sized is not None else s.default
            if image_size <= 32 and s.small is not None:
                value = s.small
            if channels == 1 and s.mono is not None:
                value = s.mono
            values[s.name] = value
        values["image_size"] = image_size
        valid = {f.name for f in fields(self.config_class)}
        unknown = set(overrides) - valid
        if unknown:
            raise ValueError(f"unknown augmentation field(s) {sorted(unknown)}; valid: {sorted(valid)}")
        values.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items() if v is not None})
        return self.config_class(**values)


def _check_config_class(cls: Any, settings: tuple[Setting, ...]) -> None:
    """A written-out config class must be a frozen dataclass with `_ConfigMethods` whose fields are ``settings``:
    the same names, in the same order, with the same defaults."""
    if not (issubclass(cls, _ConfigMethods) and getattr(cls, "__dataclass_params__", None) is not None
            and cls.__dataclass_params__.frozen):
        raise ValueError(f"{cls.__name__} must be a frozen dataclass deriving from _ConfigMethods")
    declared = [(f.name, f.default) for f in fields(cls)]
    expected = [(s.name, s.default) for s in settings]
    if declared != expected or any(f.default is MISSING for f in fields(cls)):
        raise ValueError(f"the fields of {cls.__name__} are not the spec's settings (name, default) in order: "
                         f"{declared} != {expected}")


SPEC = Spec(OPS, written_config=AugmentConfig)
NUM_UNIFORMS = SPEC.num_uniforms
# The settings a pretraining flag may override (`PretrainConfig.augment_overrides`).
CLI_SETTINGS = tuple(s.name for s in SPEC.settings if s.cli)


def augment_config(image_size: int = 224, channels: int = 3, **overrides) -> AugmentConfig:
    """The paper's views with defaults adapted to the image size and channel count; ``overrides`` win.

    At 32 px and below blur is off (a 3-pixel kernel only smears the object away) and the crop scale starts at
    0.2; for 1-channel images the colour-only steps (saturation, hue, grayscale) are off.
    """
    return SPEC.config(image_size, channels, **overrides)


def run_ops(executor: Mapping[str, Callable], x, p, cfg, kind: str | None = None):
    """Apply the ops of ``cfg``'s spec in order (only those of ``kind``, if given) with ``executor``'s function
    for each: ``x = executor[op.name](x, p, cfg)``. The one loop of every executor."""
    for op in cfg.spec.ops:
        if kind is None or op.kind == kind:
            fn = executor.get(op.name)
            if fn is None:
                raise KeyError(f"the executor has no function for op '{op.name}' (it has {sorted(executor)})")
            x = fn(x, p, cfg)
    return x


def channel_values(values: tuple[float, ...]) -> list[float]:
    return list(values) * 3 if len(values) == 1 else list(values)


__all__ = ["AugmentConfig", "blur_kernel_for", "CLI_SETTINGS", "IMAGENET_MEAN", "IMAGENET_STD", "NUM_UNIFORMS", "OPS",
           "Op", "SPEC", "Setting", "Spec", "augment_config", "channel_values", "run_ops"]
