"""User-facing errors. The CLI prints any of these as one line (no traceback) and exits with status 2."""


class BarlowTwinsError(ValueError):
    """Base class: something the user can fix (the message names the problem and the fix)."""


class ConfigError(BarlowTwinsError):
    """A bad preset, flag, config field, backbone name or projector spec."""


class DataError(BarlowTwinsError):
    """Missing, empty or unreadable data."""


class CheckpointError(BarlowTwinsError):
    """A checkpoint that cannot be read or does not match the model."""
