"""Arguments and set-up shared by the evaluation commands (knn, linear, finetune, transfer)."""

from __future__ import annotations

import argparse
import functools
import sys

from barlowtwins.data.bad_files import refuse_unreadable_in, summary_line
from barlowtwins.data.datasets import DATASETS, default_val_split
from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.backbone import load_eval_backbone
from barlowtwins.evaluate.protocols import LINEAR_PROTOCOLS
from barlowtwins.models.backbones import STEMS
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.hardware import PRECISION_HELP
from barlowtwins.weights.load import warn_default_image_size


def leaves_process_group(run):
    """Wrap a command's handler so the process group it may have started is left on every exit path."""
    @functools.wraps(run)
    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        finally:
            D.shutdown()
    return wrapper


def printable(text: str) -> str:
    """Control characters (a newline in a file name) escaped, so that a message naming it stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def labelled_datasets() -> list[str]:
    """The data sets with labels (`DATASETS`), for the evaluation commands' --dataset."""
    return [name for name, spec in DATASETS.items() if spec.labelled]


def add_linear_protocol_args(g: argparse._ArgumentGroup, batch_help: str | None = None,
                             protocol_help: str = "") -> None:
    """The flags of the linear protocols (`linear` and `transfer`); ``--protocol`` offers every entry of
    `LINEAR_PROTOCOLS`."""
    described = "; ".join(f"{name}: {spec.description}" for name, spec in LINEAR_PROTOCOLS.items())
    g.add_argument("--protocol", choices=tuple(LINEAR_PROTOCOLS), default="fast",
                   help=f"{protocol_help}{described} (default: fast)".replace("%", "%%"))
    epochs = ", ".join(f"{name} {spec.epochs}" for name, spec in LINEAR_PROTOCOLS.items())
    g.add_argument("--epochs", type=int, default=None, help=f"default per protocol: {epochs}")
    g.add_argument("--batch-size", type=int, default=256, help=batch_help)
    g.add_argument("--lr", type=float, default=0.3, help="paper: classifier lr per 256 samples")
    g.add_argument("--weight-decay", type=float, default=1e-6, help="paper: weight decay")
    g.add_argument("--seed", type=int, default=0)


def add_architecture_args(g: argparse._ArgumentGroup) -> None:
    """The backbone's architecture and input flags, for a checkpoint that does not say (every backbone reader)."""
    g.add_argument("--backbone", default=None,
                   help="torchvision model name or timm:<name> (default: from the checkpoint, else resnet50)")
    g.add_argument("--stem", default=None, choices=STEMS)
    g.add_argument("--width", type=int, default=None, help="ResNet first-stage width (narrow CPU models)")
    g.add_argument("--image-size", type=int, default=None, help="input size (default: the pretraining size, else 224)")
    g.add_argument("--mean", type=float, nargs=3, default=None, help="normalisation mean (default: the run's)")
    g.add_argument("--std", type=float, nargs=3, default=None, help="normalisation std (default: the run's)")


def add_device_args(h: argparse._ArgumentGroup) -> None:
    h.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    h.add_argument("--precision", default="auto", help=PRECISION_HELP)
    h.add_argument("--workers", type=int, default=None, help="data-loader processes for image folders")


def add_backbone_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("backbone")
    g.add_argument("--checkpoint", default=None, metavar="SOURCE",
                   help="run folder, backbone.pth, official resnet50.pth or full checkpoint, our checkpoint.pth, "
                        "or torchvision:<model>:<weights>")
    g.add_argument("--random-init", action="store_true",
                   help="evaluate the same architecture at random initialisation instead (a baseline)")
    add_architecture_args(g)
    h = p.add_argument_group("hardware")
    add_device_args(h)
    h.add_argument("--output", default=None, metavar="PATH",
                   help="result file (NAME.json), or folder (an existing one, or a name without a suffix)")
    h.add_argument("--cache-dir", default="auto", metavar="DIR",
                   help="keep extracted features here and reuse them (default: <run>/eval/cache for run folders)")
    h.add_argument("--no-cache", action="store_true", help="always extract features afresh")


def add_strict_data_arg(g) -> None:
    g.add_argument("--strict-data", action="store_true",
                   help="refuse to start when an image file cannot be read (every file is decoded first) "
                        "instead of skipping it with a warning")


def check_data(args: argparse.Namespace, *datasets) -> None:
    """``--strict-data``: every image file of ``datasets`` decodes, else one line naming the bad ones (before any
    work). Without it unreadable files are skipped, counted in the result and listed once (`report_skipped`)."""
    if getattr(args, "strict_data", False):
        refuse_unreadable_in(*datasets)


def report_skipped(skipped: list[dict]) -> None:
    """The one warning line naming every unreadable file a command skipped (nothing when none was)."""
    line = summary_line(skipped)
    if line and D.is_main_process():
        print(f"warning: {printable(line)}", file=sys.stderr, flush=True)


def add_column_args(g) -> None:
    """``--image-column`` / ``--label-column`` of ``--dataset hf`` (`data.hf`)."""
    g.add_argument("--image-column", default=None, help="--dataset hf: the column of the images (default: the "
                                                         "Image feature, or the first binary column)")
    g.add_argument("--label-column", default=None, help="--dataset hf: the column of the labels (default: the "
                                                         "ClassLabel column, or one named label)")


def add_data_args(p: argparse.ArgumentParser, val_help: str = "evaluation split") -> None:
    g = p.add_argument_group("data")
    add_strict_data_arg(g)
    g.add_argument("--dataset", default=None,
                   help=f"{', '.join(labelled_datasets())} (default: the pretraining data set)")
    g.add_argument("--data-dir", default=None, help="data folder (default: the pretraining one)")
    g.add_argument("--download", action="store_true", help="let torchvision download CIFAR/STL-10")
    g.add_argument("--train-split", default="train")
    g.add_argument("--val-split", default=None, help=f"{val_help} (default: test, or val for folders)")
    add_column_args(g)


def setup_backbone(args: argparse.Namespace, *, warn_size: bool = True):
    """The backbone the flags describe, with the checkpoint's weights loaded (or random ones); one warning line
    when neither the source nor ``--image-size`` gives the input size (224 px is then used; ``warn_size=False``
    for a protocol with sizes of its own, detection)."""
    setup = load_eval_backbone(args.checkpoint, random_init=args.random_init, backbone=args.backbone,
                               stem=args.stem, width=args.width, image_size=args.image_size, mean=args.mean,
                               std=args.std, device=args.device, precision=args.precision,
                               cache_dir=None if args.no_cache else args.cache_dir)
    if warn_size and not setup.arch.get("image_size") and D.is_main_process():
        warn_default_image_size(printable(args.checkpoint or "the randomly initialised backbone"))
    return setup


def resolve_data(args: argparse.Namespace, arch: dict | None = None) -> tuple[str, str | None, str]:
    """(dataset, data_dir, val_split) from the flags, else the pretraining run's."""
    arch = arch or {}
    dataset = args.dataset or arch.get("dataset")
    data_dir = args.data_dir if args.data_dir is not None else (arch.get("data_dir") if not args.dataset else None)
    if dataset is None or dataset == "images":
        raise ConfigError(f"name a labelled data set: --dataset {'|'.join(labelled_datasets())} "
                          "(with --data-dir for folders)")
    val = args.val_split or default_val_split(dataset)
    return dataset, data_dir, val
