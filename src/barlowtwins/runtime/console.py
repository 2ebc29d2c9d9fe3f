"""Terminal output helpers."""

from __future__ import annotations

import sys


def on_terminal(stream=None) -> bool:
    """True when ``stream`` (default: stderr, where tqdm writes) is a terminal. The evaluation commands' tqdm bars
    are off otherwise, so a log file (SLURM, CI, ``| tee``) gets no carriage-return lines."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())
