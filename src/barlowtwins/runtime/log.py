"""The library's messages as `logging` records, and the console handler that prints them as the CLI shows them.

Library code says what happened through a module logger (``log = get_logger(__name__)``): ``log.info`` for a line
of the run's account (stdout), ``log.log(NOTE, ...)`` for something worth knowing that is not a problem, and
``log.warning`` for a problem worked around (both on stderr, so that stdout stays the run's account). Each message
carries its own ``note: `` / ``warning: `` prefix: the same line then reads right wherever it ends up, in the
CLI's handler, in a data-loader worker that has no handler (Python's last-resort handler prints warnings as they
are) or in a user's own logging set-up.

The package adds no handler on import: a program that configures `logging` gets the records like any other
library's. `enable_console` (called by the CLI and by `barlowtwins.pretrain` where nothing else is set up) adds
the one that prints them.
"""

from __future__ import annotations

import logging
import sys

ROOT = "barlowtwins"
NOTE = 25  # between INFO and WARNING: printed to stderr like a warning, but not one
logging.addLevelName(NOTE, "NOTE")


def get_logger(name: str) -> logging.Logger:
    """The logger of a module of the package (``get_logger(__name__)``); every one is below ``barlowtwins``."""
    return logging.getLogger(name if name == ROOT or name.startswith(ROOT + ".") else f"{ROOT}.{name}")


class ConsoleHandler(logging.Handler):
    """Prints each record's message as it is: INFO to stdout, NOTE and above to stderr, flushed at once.

    The stream is looked up at each record (not kept from construction), so that a redirected ``sys.stdout`` or
    ``sys.stderr`` (pytest's capture, ``contextlib.redirect_stdout``) receives the lines written after it."""

    def __init__(self, level: int = logging.INFO):
        super().__init__(level)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= NOTE else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)


def enable_console(level: int = logging.INFO) -> ConsoleHandler:
    """Print the package's records to the console (`ConsoleHandler`) from ``level`` up; idempotent: the handler is
    added once, and a later call only sets the level."""
    logger = logging.getLogger(ROOT)
    handler = next((h for h in logger.handlers if isinstance(h, ConsoleHandler)), None)
    if handler is None:
        handler = ConsoleHandler(level)
        logger.addHandler(handler)
    handler.setLevel(level)
    logger.setLevel(min(level, logger.level or level))
    return handler


def console_unconfigured() -> bool:
    """True when neither the root logger nor the package's has a handler: the program set nothing up, so the
    package's own console handler is what shows its lines."""
    return not logging.getLogger().handlers and not logging.getLogger(ROOT).handlers
