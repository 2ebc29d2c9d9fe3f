"""``barlowtwins export``: write a backbone as a plain torchvision state dict from any supported source."""

from __future__ import annotations

import argparse


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="export a backbone as a plain torchvision state dict",
                       description="Read a backbone from a run folder, our checkpoint.pth, the official full "
                                   "checkpoint or a state dict, and write it as a torchvision state dict without "
                                   "the classifier (loads with torchvision.models.<name>().load_state_dict(sd, "
                                   "strict=False), only fc.* missing).")
    p.add_argument("--checkpoint", required=True, metavar="SOURCE")
    p.add_argument("--output", required=True, metavar="FILE", help="where to write backbone.pth")
    return p


def run(args: argparse.Namespace) -> int:
    from ..checkpoint import load_backbone_state, save_atomic

    src = load_backbone_state(args.checkpoint)
    save_atomic({k: v.contiguous().clone() for k, v in src.state.items()}, args.output)
    print(f"wrote {len(src.state)} tensors from {src.origin} to {args.output}")
    return 0
