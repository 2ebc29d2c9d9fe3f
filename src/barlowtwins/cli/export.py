"""``barlowtwins export``: write a backbone from any supported source as pth, safetensors, TorchScript, ONNX or
the detectron2 layout (the writers are in `barlowtwins.weights.formats`)."""

from __future__ import annotations

import argparse

FORMATS = ("pth", "safetensors", "torchscript", "onnx", "detectron2")


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False,
                       help="export a backbone (pth, safetensors, TorchScript, ONNX, detectron2)",
                       description="Read a backbone from a run folder, our checkpoint.pth, backbone.safetensors, the "
                                   "official full checkpoint or a state dict, and write it without the classifier. "
                                   "pth: a torchvision state dict (torchvision.models.<name>().load_state_dict(sd, "
                                   "strict=False), only fc.* missing); safetensors: the same, loadable with no pickle; "
                                   "torchscript: the traced backbone (torch.jit.load); onnx: dynamic batch axis, "
                                   "checked against PyTorch with onnxruntime when installed; detectron2: the key "
                                   "layout of detectron2's convert-torchvision-to-d2 (a .pkl for MODEL.WEIGHTS).")
    p.add_argument("--checkpoint", required=True, metavar="SOURCE")
    p.add_argument("--format", default="pth", choices=FORMATS, help="default: pth")
    p.add_argument("--output", required=True, metavar="FILE", help="the file to write")
    g = p.add_argument_group("architecture (default: what the source says, else resnet50)")
    g.add_argument("--backbone", default=None, help="torchvision model name or timm:<name>")
    g.add_argument("--stem", default=None, choices=("standard", "small", "small-pool"))
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--image-size", type=int, default=None,
                   help="torchscript/onnx: the input size traced (default: the pretraining size, else 224)")
    return p


def run(args: argparse.Namespace) -> int:
    from barlowtwins.weights.formats import export_backbone_file

    src, how = export_backbone_file(args.checkpoint, args.format, args.output, image_size=args.image_size,
                                    backbone=args.backbone, stem=args.stem, width=args.width)
    print(f"wrote {len(src.state)} tensors from {src.origin} to {args.output} as {how}")
    return 0
