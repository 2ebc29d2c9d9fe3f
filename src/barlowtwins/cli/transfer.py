"""``barlowtwins transfer``: frozen-feature transfer to the data sets of `barlowtwins.data.transfer.TRANSFER_DATASETS`
(any labelled folder, iNaturalist 2018 and Places-205 in their published layouts: linear probes; PASCAL VOC07
classification: per-class linear SVMs, mAP)."""

from __future__ import annotations

import argparse

from barlowtwins.cli.common import (
    add_backbone_args,
    add_linear_protocol_args,
    add_strict_data_arg,
    check_data,
    leaves_process_group,
    report_skipped,
    setup_backbone,
)
from barlowtwins.data.transfer import TRANSFER_DATASETS, build_transfer_dataset, transfer_spec
from barlowtwins.evaluate.protocols import linear_protocol, svm_protocol
from barlowtwins.evaluate.results import result_path, write_result
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="transfer to other data sets on frozen features",
                       description="Transfer evaluation on frozen features: a linear probe (--protocol, as for "
                                   "`barlowtwins linear`) on single-label data sets, or per-class linear SVMs with "
                                   "the cost chosen by 3-fold cross-validation on the training split and mAP on the "
                                   "test split for multi-label ones (see --dataset).")
    add_backbone_args(p)
    g = p.add_argument_group("data")
    described = "; ".join(f"{n}: {s.description} [{s.protocol}, splits {s.splits[0]}/{s.splits[1]}]"
                          for n, s in TRANSFER_DATASETS.items())
    g.add_argument("--dataset", required=True, choices=tuple(TRANSFER_DATASETS), help=described.replace("%", "%%"))
    g.add_argument("--data-dir", required=True, help="root of the data set in its published layout")
    g.add_argument("--image-root", default=None, help="places205: folder of the images if not under --data-dir")
    g.add_argument("--train-split", default=None, help="default: the data set's (see --dataset)")
    g.add_argument("--val-split", default=None, help="default: the data set's (see --dataset)")
    add_strict_data_arg(g)
    g = p.add_argument_group("protocol")
    add_linear_protocol_args(g, protocol_help="linear data sets only. ")
    return p


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    spec = transfer_spec(args.dataset)
    train_split = args.train_split or spec.splits[0]
    val_split = args.val_split or spec.splits[1]
    protocol = "transfer-svm" if spec.protocol == "svm" else f"transfer-linear-{args.protocol}"
    path = result_path(protocol, args.dataset, args.checkpoint, args.output, "random" if args.random_init else "")
    check_writable(path)  # before any work, not after it
    setup = setup_backbone(args)
    train = build_transfer_dataset(args.dataset, args.data_dir, train_split, args.image_root)
    val = build_transfer_dataset(args.dataset, args.data_dir, val_split, args.image_root)
    check_data(args, train, val)
    names = (args.dataset, train_split, val_split)
    if spec.protocol == "svm":
        result = svm_protocol(setup, train, val, names=names, batch_size=args.batch_size, workers=args.workers)
    else:
        result = linear_protocol(setup, train, val, names=names, protocol=args.protocol, prefix="transfer-linear",
                                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 weight_decay=args.weight_decay, seed=args.seed, workers=args.workers, counts=True)
    if D.is_main_process():
        write_result(result.to_record(), path)
        print(f"transfer ({result.protocol}) {args.dataset} {val_split}: {result.summary()}  [{path}]")
        report_skipped(result.skipped)
    return 0
