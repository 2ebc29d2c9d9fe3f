"""User-facing errors. The CLI prints any of these as one line (no traceback) and exits with status 2."""


class BarlowTwinsError(ValueError):
    """Base class: something the user can fix (the message names the problem and the fix).

    The message speaks Python (``batch_size``) where the error is about a value a program gave; ``cli``, where it
    is set (`field_error`), is the same message as the command line says it (``--batch-size``), which the CLI
    prints instead. Declared only, as `DataError.reason`."""

    cli: str


class ConfigError(BarlowTwinsError):
    """A bad preset, flag, config field, backbone name or projector spec."""


class DataError(BarlowTwinsError):
    """Missing, empty or unreadable data.

    ``reason``: a short reason (e.g. ``"truncated shard"``) that the code raising an unreadable sample's error sets
    after construction (``err = DataError(msg); err.reason = "..."``). Declared only: an error without one has no
    such attribute, so ``getattr(e, "reason", default)`` still falls back to its default."""

    reason: str


class CheckpointError(BarlowTwinsError):
    """A checkpoint that cannot be read or does not match the model."""


def field_error(render, cls: type[BarlowTwinsError] = ConfigError) -> BarlowTwinsError:
    """An error about a config field, in both spellings: ``render(name_of)`` writes the message with
    ``name_of(field)`` where the field is named, called with the Python name (``batch_size``) for the message and
    with the flag (``--batch-size``) for `BarlowTwinsError.cli`."""
    error = cls(render(lambda name: name))
    error.cli = render(lambda name: "--" + name.replace("_", "-"))
    return error

