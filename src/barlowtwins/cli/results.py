"""``barlowtwins results``: a Markdown table of every evaluation result found under the given folders."""

from __future__ import annotations

import argparse
import sys

from barlowtwins.cli.common import printable
from barlowtwins.errors import DataError
from barlowtwins.evaluate.results import find_results, markdown_table


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="print a Markdown table of evaluation results",
                       description="Collect the JSON result files that knn, linear, finetune and transfer wrote "
                                   "(under RUN_DIR/eval/ or wherever --output put them) into one Markdown table.")
    p.add_argument("paths", nargs="+", metavar="RUN_DIR", help="run folders, result folders or result files")
    return p


def run(args: argparse.Namespace) -> int:
    skipped: list = []
    found = find_results(args.paths, skipped=skipped)
    for path, why in skipped:  # one line each, on stderr: the table on stdout stays clean
        print(f"warning: skipped {printable(str(path))}: {why}", file=sys.stderr)
    if not found:
        raise DataError(f"no result files found under {', '.join(args.paths)}; run an evaluation command first")
    print(markdown_table(found))
    return 0
