"""``barlowtwins list-backbones``: the backbone names --backbone accepts (torchvision, and timm when installed)."""

from __future__ import annotations

import argparse

from barlowtwins.errors import ConfigError
from barlowtwins.models.backbones import list_backbones, timm_module


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="list the backbone names --backbone accepts",
                       description="Print torchvision's classification models and, when timm is installed, timm's "
                                   "models as timm:<name>. PATTERN is a shell pattern ('resnet*', 'timm:convnext*'); "
                                   "without wildcards it matches names that contain it.")
    p.add_argument("pattern", nargs="?", default=None, metavar="PATTERN")
    return p


def run(args: argparse.Namespace) -> int:
    names = list_backbones(args.pattern)
    if not names:
        raise ConfigError(f"no backbone matches '{args.pattern}'; try a shorter pattern, e.g. resnet")
    print("\n".join(names))
    if timm_module() is None:
        print("(timm is not installed: pip install 'barlowtwins[timm]' for timm:<name> backbones)")
    return 0
