"""``barlowtwins env``: versions, optional extras, devices and data sets found, for bug reports."""

from __future__ import annotations

import argparse
import json

from barlowtwins.report.environment import collect, format_text


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="show versions, devices and data found (for bug reports)",
                       description="Print the Python, PyTorch and torchvision versions, which optional extras are "
                                   "installed, the devices and what they support (CUDA compute capability and bf16, "
                                   "MPS, CPU count, torch.compile), the data-loader workers chosen by default and the "
                                   "data sets found. Paste it into a bug report.")
    p.add_argument("--json", action="store_true", help="print the same as one JSON object")
    return p


def run(args: argparse.Namespace) -> int:
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_text(info))
    return 0
