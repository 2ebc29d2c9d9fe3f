"""``barlowtwins finetune``: semi-supervised fine-tuning of the whole network on a labelled subset."""

from __future__ import annotations

import argparse
from pathlib import Path

from barlowtwins.cli.common import (
    add_backbone_args,
    add_data_args,
    check_data,
    leaves_process_group,
    report_skipped,
    resolve_data,
    setup_backbone,
)
from barlowtwins.data.datasets import build_dataset, data_options
from barlowtwins.data.subsets import (
    STANDARD_PERCENTS,
    balanced_subset,
    imagenet_subset,
    is_imagenet_folder,
    read_subset_file,
    write_subset_file,
)
from barlowtwins.errors import DataError
from barlowtwins.evaluate.protocols import finetune_protocol
from barlowtwins.evaluate.results import result_path, write_result
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="semi-supervised fine-tuning on 1%% / 10%% of the labels",
                       description="Fine-tune backbone + linear head on a labelled subset (the official recipe: "
                                   "20 epochs, SGD momentum 0.9, batch 256, backbone lr 0.005, head lr 0.5, weight "
                                   "decay 0, cosine). On ImageNet the standard 1%/10% lists are used; on other data "
                                   "a seeded class-balanced subset, or --subset-file. The subset is saved next to the "
                                   "result so the run can be repeated.")
    add_backbone_args(p)
    add_data_args(p)
    g = p.add_argument_group("fine-tuning")
    g.add_argument("--train-percent", type=float, default=1,
                   help="1 or 10 (standard ImageNet lists), or any %% elsewhere")
    g.add_argument("--subset", choices=("auto", "standard", "balanced"), default="auto",
                   help="auto: the standard lists for ImageNet folders, balanced otherwise")
    g.add_argument("--subset-file", default=None, help="a list of file names or indices to train on instead")
    g.add_argument("--epochs", type=int, default=20)
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--lr-backbone", type=float, default=0.005)
    g.add_argument("--lr-head", type=float, default=0.5)
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--schedule", choices=("cosine", "step"), default="cosine",
                   help="step: the paper's x0.2 at --milestones")
    g.add_argument("--milestones", type=int, nargs="+", default=[12, 16])
    g.add_argument("--seed", type=int, default=0)
    return p


def choose_subset(args: argparse.Namespace, train, seed: int):
    """(indices, description) of the labelled subset the flags ask for."""
    if args.subset_file:
        return read_subset_file(args.subset_file, train), f"list file {args.subset_file}"
    standard = args.subset == "standard" or (args.subset == "auto" and is_imagenet_folder(train))
    if standard:
        if args.train_percent not in STANDARD_PERCENTS:
            raise DataError(f"the standard ImageNet subsets are 1% and 10%; got --train-percent {args.train_percent}")
        pct = int(args.train_percent)
        return imagenet_subset(train, pct), f"standard ImageNet {pct}% list (google-research/simclr)"
    return balanced_subset(train.labels, args.train_percent, seed), \
        f"class-balanced {args.train_percent}% (seed {seed})"


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    setup = setup_backbone(args)
    dataset, data_dir, val_split = resolve_data(args, setup.arch)
    pct = f"{args.train_percent:g}"
    path = result_path("finetune", dataset, args.checkpoint, args.output,
                       f"{pct}pct" + ("-random" if args.random_init else ""))
    subset_file = Path(str(path).removesuffix(".json") + ".subset.txt")
    check_writable(path)  # before any work, not after it
    check_writable(subset_file)
    train = build_dataset(dataset, data_dir, args.train_split, args.download, **data_options(args, dataset))
    val = build_dataset(dataset, data_dir, val_split, args.download, **data_options(args, dataset))
    indices, how = choose_subset(args, train, args.seed)
    subset = train.subset(indices)
    check_data(args, subset, val)
    if D.is_main_process():
        write_subset_file(subset_file, train, indices)
        print(f"fine-tuning on {len(subset)} of {len(train)} labelled images: {how}")
    result = finetune_protocol(setup, subset, val, names=(dataset, args.train_split, val_split),
                               num_classes=train.num_classes, train_percent=args.train_percent,
                               subset_description=how, epochs=args.epochs, batch_size=args.batch_size,
                               lr_backbone=args.lr_backbone, lr_head=args.lr_head, weight_decay=args.weight_decay,
                               schedule=args.schedule, milestones=args.milestones, seed=args.seed, workers=args.workers)
    if D.is_main_process():
        write_result(result.to_record(), path)
        print(f"finetune {pct}% {dataset} {val_split}: {result.summary()}  [{path}]")
        report_skipped(result.skipped)
    return 0
