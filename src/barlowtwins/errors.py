"""User-facing errors. The CLI prints any of these as one line (no traceback) and exits with status 2."""


class BarlowTwinsError(ValueError):
    """Base class: something the user can fix (the message names the problem and the fix)."""


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
