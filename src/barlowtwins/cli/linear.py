"""``barlowtwins linear``: linear evaluation of a frozen backbone, fast (cached features) or the paper's."""

from __future__ import annotations

import argparse

from barlowtwins.cli.common import (
    add_backbone_args,
    add_data_args,
    add_linear_protocol_args,
    check_data,
    leaves_process_group,
    report_skipped,
    resolve_data,
    setup_backbone,
)
from barlowtwins.data.datasets import build_dataset, data_options
from barlowtwins.evaluate.protocols import linear_protocol
from barlowtwins.evaluate.results import result_path, write_result
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="linear evaluation on a frozen backbone",
                       description="Linear evaluation of a frozen backbone by one of the linear protocols "
                                   "(--protocol; see its help).")
    add_backbone_args(p)
    add_data_args(p)
    g = p.add_argument_group("protocol")
    add_linear_protocol_args(g, "paper: training batch (global); fast: extraction batch")
    g.add_argument("--lrs", type=float, nargs="+", default=None, help="fast: learning-rate grid")
    g.add_argument("--wds", type=float, nargs="+", default=None, help="fast: weight-decay grid")
    g.add_argument("--holdout", type=float, default=0.1, help="fast: held-out fraction of the training set")
    g.add_argument("--flip", action="store_true", help="fast: also train on the features of mirrored images")
    return p


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    setup = setup_backbone(args)
    dataset, data_dir, val_split = resolve_data(args, setup.arch)
    path = result_path(f"linear-{args.protocol}", dataset, args.checkpoint, args.output,
                       "random" if args.random_init else "")
    check_writable(path)  # before any work, not after it
    train = build_dataset(dataset, data_dir, args.train_split, args.download, **data_options(args, dataset))
    val = build_dataset(dataset, data_dir, val_split, args.download, **data_options(args, dataset))
    check_data(args, train, val)
    result = linear_protocol(setup, train, val, names=(dataset, args.train_split, val_split), protocol=args.protocol,
                             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, lrs=args.lrs, wds=args.wds, holdout=args.holdout,
                             flip=args.flip, seed=args.seed, workers=args.workers)
    if D.is_main_process():
        write_result(result.to_record(), path)
        print(f"linear ({args.protocol}) {dataset} {val_split}: {result.summary()}  [{path}]")
        report_skipped(result.skipped)
    return 0
