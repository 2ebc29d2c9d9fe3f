"""The user-facing errors: one hierarchy of ValueErrors, each printed by the CLI as one line with exit status 2."""

import pytest

from barlowtwins import cli
from barlowtwins.errors import BarlowTwinsError, CheckpointError, ConfigError, DataError

ERRORS = [BarlowTwinsError, ConfigError, DataError, CheckpointError]


@pytest.mark.parametrize("kind", ERRORS)
def test_every_error_is_a_value_error_and_a_barlowtwins_error(kind):
    assert issubclass(kind, BarlowTwinsError) and issubclass(kind, ValueError)
    with pytest.raises(ValueError, match="the message"):  # code that catches ValueError catches ours
        raise kind("the message")


def test_the_kinds_are_distinct():
    for a in (ConfigError, DataError, CheckpointError):
        for b in (ConfigError, DataError, CheckpointError):
            assert issubclass(a, b) == (a is b)


def test_a_data_error_has_a_reason_only_when_one_is_set():
    err = DataError("corrupt image x.jpg")
    assert getattr(err, "reason", "default") == "default"  # declared, not given a value
    err.reason = "truncated shard"
    assert err.reason == "truncated shard" and str(err) == "corrupt image x.jpg"


class _Raises:
    """A stand-in command module whose handler raises ``error``."""

    def __init__(self, error):
        self.error = error

    def add_parser(self, sub, name):
        return sub.add_parser(name)

    def run(self, args):
        raise self.error


@pytest.mark.parametrize("kind", ERRORS)
def test_the_cli_prints_each_as_one_line_and_exits_2(kind, monkeypatch, capsys):
    # A message from a data-loader worker carries the worker's traceback: the last line is the error's own.
    message = "Traceback (most recent call last):\n  File 'worker.py'\n" \
              f"barlowtwins.errors.{kind.__name__}: the folder x has no images; give another --data-dir"
    monkeypatch.setitem(cli.COMMANDS, "fake", _Raises(kind(message)))
    assert cli.main(["fake"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "barlowtwins fake: error: the folder x has no images; give another --data-dir\n"
    assert captured.out == ""


def test_other_exceptions_are_not_taken_for_user_errors(monkeypatch):
    monkeypatch.setitem(cli.COMMANDS, "fake", _Raises(ValueError("a bug, not the user's input")))
    with pytest.raises(ValueError, match="a bug"):  # a plain ValueError keeps its traceback
        cli.main(["fake"])
