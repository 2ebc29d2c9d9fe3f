"""``barlowtwins export``: write a backbone from any supported source in one of the export formats (the
entries of `barlowtwins.weights.formats.EXPORT_FORMATS`: pth, safetensors, TorchScript, ONNX, detectron2)."""

from __future__ import annotations

import argparse

from barlowtwins.errors import BarlowTwinsError
from barlowtwins.models.backbones import STEMS
from barlowtwins.weights.formats import EXPORT_FORMATS, export_backbone_file
from barlowtwins.weights.load import warn_default_image_size
from barlowtwins.weights.sources import cli_message

TRACED_FORMATS = ("torchscript", "onnx")  # the formats traced at an input size (--image-size)


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    described = "; ".join(f"{n} ({f.suffix}): {f.description}" for n, f in EXPORT_FORMATS.items())
    p = sub.add_parser(name, allow_abbrev=False,
                       help=f"export a backbone ({', '.join(EXPORT_FORMATS)})",
                       description=("Read a backbone from a run folder, our checkpoint.pth, backbone.safetensors, the "
                                    "official full checkpoint or a state dict, and write it without the classifier. "
                                    f"{described}.").replace("%", "%%"))
    p.add_argument("--checkpoint", required=True, metavar="SOURCE")
    p.add_argument("--format", default="pth", choices=tuple(EXPORT_FORMATS), help="default: pth")
    p.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    g = p.add_argument_group("architecture (default: what the source says, else resnet50)")
    g.add_argument("--backbone", default=None, help="torchvision model name or timm:<name>")
    g.add_argument("--stem", default=None, choices=STEMS)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--image-size", type=int, default=None,
                   help="torchscript/onnx: the input size traced (default: the pretraining size, else 224)")
    return p


def run(args: argparse.Namespace) -> int:
    try:
        src, how = export_backbone_file(args.checkpoint, args.format, args.output, image_size=args.image_size,
                                        backbone=args.backbone, stem=args.stem, width=args.width)
    except BarlowTwinsError as e:  # the library names its Python arguments; here they are flags
        raise type(e)(cli_message(str(e))) from None
    if args.format in TRACED_FORMATS and args.image_size is None and not src.arch.get("image_size"):
        warn_default_image_size(src.origin)  # traced at 224 px
    print(f"wrote {len(src.state)} tensors from {src.origin} to {args.output} as {how}")
    return 0
