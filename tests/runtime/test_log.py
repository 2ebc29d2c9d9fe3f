"""The library's messages as logging records: where each level is printed, the handler added once, the same line
without any handler, and no stray print() left in the library layers."""

from __future__ import annotations

import ast
import logging
import subprocess
import sys
from pathlib import Path

from barlowtwins.runtime import log as L

SRC = Path(L.__file__).resolve().parents[1]


def test_info_goes_to_stdout_notes_and_warnings_to_stderr_as_written(capsys):
    logger = L.get_logger("barlowtwins.tests.where")
    L.enable_console()
    logger.info("step 10 loss 1.0")
    logger.log(L.NOTE, "note: a stale lock was taken over")
    logger.warning("warning: skipping unreadable image a.jpg (truncated)")
    logger.debug("not shown at the default level")
    out, err = capsys.readouterr()
    assert out == "step 10 loss 1.0\n"
    assert err == "note: a stale lock was taken over\nwarning: skipping unreadable image a.jpg (truncated)\n"


def test_the_stream_is_looked_up_per_line(capsys):
    """The handler keeps no stream from when it was made: a redirection made later receives the lines."""
    handler = L.enable_console()
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        L.get_logger("x").info("into the redirection")
    assert buf.getvalue() == "into the redirection\n"
    assert capsys.readouterr().out == ""
    assert handler is L.enable_console()


def test_enable_console_adds_one_handler_and_names_are_under_the_package():
    L.enable_console()
    L.enable_console(logging.WARNING)
    root = logging.getLogger(L.ROOT)
    try:
        assert sum(isinstance(h, L.ConsoleHandler) for h in root.handlers) == 1
        assert L.get_logger("barlowtwins.data.shards").name == "barlowtwins.data.shards"
        assert L.get_logger("elsewhere").name == "barlowtwins.elsewhere"
        assert logging.getLevelName(L.NOTE) == "NOTE"
    finally:
        L.enable_console(logging.INFO)


def test_without_any_handler_a_warning_is_still_the_same_line(tmp_path):
    """A data-loader worker or a program that set up nothing: Python's last-resort handler prints the warning
    as the CLI would (the prefix is part of the message); info lines stay quiet there."""
    code = ("from barlowtwins.data.bad_files import note_unreadable; from barlowtwins.runtime.log import get_logger;"
            "get_logger('x').info('quiet'); note_unreadable('a.jpg', 'truncated')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert done.stderr == "warning: skipping unreadable image a.jpg (truncated)\n"


def test_a_program_with_logging_set_up_gets_records_not_our_console(caplog):
    assert not L.console_unconfigured()  # this test process: conftest enabled the console
    with caplog.at_level(logging.INFO, logger=L.ROOT):
        L.get_logger("barlowtwins.tests.records").warning("warning: a record")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("barlowtwins.tests.records", logging.WARNING, "warning: a record")]
    fresh = subprocess.run([sys.executable, "-c", "import logging; from barlowtwins.runtime.log import "
                            "console_unconfigured as c; a = c(); logging.basicConfig(); print(a, c())"],
                           capture_output=True, text=True, timeout=120)
    assert fresh.stdout.split() == ["True", "False"], fresh.stderr


# print() is kept where logging cannot do the job: a signal handler (logging's locks are not re-entrant from
# one) and the progress display, which writes to the stream its caller gives it.
PRINT_ALLOWED = {"training/signals.py", "training/progress.py"}


def test_the_library_layers_log_instead_of_printing():
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("cli/") or rel in PRINT_ALLOWED:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                found.append(f"{rel}:{node.lineno}")
    assert found == []
