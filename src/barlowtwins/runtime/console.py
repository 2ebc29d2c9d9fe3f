"""Terminal output helpers: whether output goes to a terminal, a bar only there, and "did you mean" hints."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def on_terminal(stream=None) -> bool:
    """True when ``stream`` (default: stderr, where tqdm writes) is a terminal."""
    stream = sys.stderr if stream is None else stream
    return bool(getattr(stream, "isatty", lambda: False)())


def terminal_bar(iterable: Iterable | None = None, *, stream=None, enabled: bool | None = None, **kwargs) -> tqdm:
    """A tqdm bar written to ``stream`` (default stderr) when it is a terminal, a silent pass-through otherwise:
    a bar redraws itself with carriage returns, which a log file (SLURM, CI, ``| tee``) keeps as thousands of
    lines. ``enabled`` forces the choice; ``kwargs`` go to tqdm (``total``, ``desc``, ``unit``, ...)."""
    stream = sys.stderr if stream is None else stream
    show = on_terminal(stream) if enabled is None else enabled
    return tqdm(iterable, file=stream, dynamic_ncols=True, disable=not show, **kwargs)


def did_you_mean(name: str, known: Iterable[str], n: int = 1, prefix: str = "") -> str:
    """`` (did you mean X?)`` (up to ``n`` of the closest of ``known``, difflib's ratio >= 0.6, each after
    ``prefix``), or an empty string when nothing is close."""
    close = difflib.get_close_matches(name, list(known), n=n, cutoff=0.6)
    return f" (did you mean {', '.join(prefix + c for c in close)}?)" if close else ""
