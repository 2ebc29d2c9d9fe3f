"""The ``barlowtwins`` command: one sub-command per module in this package, each with its own parser
(``add_parser``) and handler (``run``). Flags are never abbreviated."""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys

from barlowtwins.cli import (
    bench,
    detect,
    embed,
    env,
    export,
    finetune,
    knn,
    linear,
    list_backbones,
    neighbors,
    pretrain,
    report,
    results,
    shard,
    transfer,
)
from barlowtwins.cli.common import printable
from barlowtwins.errors import BarlowTwinsError
from barlowtwins.runtime.console import did_you_mean
from barlowtwins.runtime.files import describe_os_error
from barlowtwins.runtime.log import enable_console
from barlowtwins.training import signals
from barlowtwins.version import __version__
from barlowtwins.weights.sources import cli_message

COMMANDS = {
    "pretrain": pretrain,
    "knn": knn,
    "linear": linear,
    "finetune": finetune,
    "transfer": transfer,
    "results": results,
    "export": export,
    "detect": detect,
    "embed": embed,
    "neighbors": neighbors,
    "list-backbones": list_backbones,
    "bench": bench,
    "report": report,
    "shard": shard,
    "env": env,
}


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and the closest flag suggested for an unknown one."""

    _command_parsers: dict[str, argparse.ArgumentParser]  # the top level's: command -> its parser (`build_parser`)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {printable(message)}\n")

    def parse_known_args(self, args=None, namespace=None):
        parsed, extra = super().parse_known_args(args, namespace)
        if extra and self.prog == "barlowtwins":  # only the top level reports; sub-parsers pass extras up
            unknown = next((a for a in extra if a.startswith("-")), extra[0])
            command = getattr(parsed, "command", None)
            sub = self._command_parsers.get(command)
            options = [o for a in (sub or self)._actions for o in a.option_strings if o.startswith("--")]
            hint = did_you_mean(unknown.split("=", 1)[0], options) if unknown.startswith("--") else ""
            (sub or self).error(f"unrecognized arguments: {' '.join(extra)}{hint}")
        return parsed, extra


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="barlowtwins", allow_abbrev=False,
                                     description="Barlow Twins self-supervised pretraining and evaluation.")
    parser.add_argument("--version", action="version", version=f"barlowtwins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser._command_parsers = {}
    for name, module in COMMANDS.items():
        parser._command_parsers[name] = module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    enable_console()  # the library's log records, printed as the lines a user of the command reads
    # Large CPU tensors (a batch of views, activations) in 2 MB transparent huge pages: on a VM a fresh 38 MB
    # tensor costs ~9 ms instead of ~28 ms of page faults. PyTorch reads this at its first allocation of 2 MB
    # or more, which comes later; THP_MEM_ALLOC_ENABLE=0 keeps the default. Only the command sets it: importing
    # the library changes nothing in the user's process.
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    # A long run listens for stop signals from its first line: a SIGTERM/SIGUSR1 during set-up is remembered
    # and answered with a clean stop (and a SLURM requeue) instead of killing the job.
    installed = argv[:1] == ["pretrain"] and signals.install()
    try:
        return _main(argv)
    finally:
        if installed:
            signals.STOP.restore()


def _main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except BarlowTwinsError as e:
        said = getattr(e, "cli", None)  # the message with flags where the library's names Python fields
        text = " ".join(said.split()) if said else cli_message(_one_line(e))
        print(f"barlowtwins {args.command}: error: {printable(text)}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only file system, a name too long: whatever command met it
        doing = "write" if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "access"
        print(f"barlowtwins {args.command}: error: {printable(describe_os_error(e, doing))}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"barlowtwins {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"barlowtwins {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: Exception) -> str:
    # An error raised in a data-loader worker comes back with the worker's traceback in its message;
    # the last line is ours.
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else type(e).__name__
    m = re.match(r"(?:barlowtwins\.errors\.)?(?:DataError|ConfigError|CheckpointError|BarlowTwinsError): (.*)", last)
    return m.group(1) if m else last
