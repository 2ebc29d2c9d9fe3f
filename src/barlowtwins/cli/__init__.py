"""The ``barlowtwins`` command: one sub-command per module in this package, each with its own parser
(``add_parser``) and handler (``run``). Flags are never abbreviated."""

from __future__ import annotations

import argparse
import sys

from ..errors import BarlowTwinsError
from . import (bench, detect, embed, env, export, finetune, knn, linear, list_backbones, neighbors, pretrain,
               report, results, transfer)

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
    "env": env,
}


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="barlowtwins", allow_abbrev=False,
                                     description="Barlow Twins self-supervised pretraining and evaluation.")
    parser.add_argument("--version", action="version", version=f"barlowtwins {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in COMMANDS.items():
        module.add_parser(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(COMMANDS[args.command].run(args) or 0)
    except BarlowTwinsError as e:
        print(f"barlowtwins {args.command}: error: {_one_line(e)}", file=sys.stderr)
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
    return last.split(": ", 1)[1] if last.startswith(("DataError: ", "ConfigError: ", "CheckpointError: ")) else last
