"""``barlowtwins transfer``: frozen-feature transfer: linear probes on any labelled folder, iNaturalist 2018 and
Places-205 in their published layouts, and PASCAL VOC07 classification with per-class linear SVMs (mAP)."""

from __future__ import annotations

import argparse

from barlowtwins.cli.common import add_backbone_args, add_linear_protocol_args, leaves_process_group, setup_backbone

DEFAULT_SPLITS = {"folder": ("train", "val"), "inat2018": ("train", "val"), "places205": ("train", "val"),
                  "voc2007": ("trainval", "test")}


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="transfer to other data sets on frozen features",
                       description="Transfer evaluation on frozen features. folder/inat2018/places205: a linear probe "
                                   "(--protocol fast or paper, as for `barlowtwins linear`); voc2007: per-class linear "
                                   "SVMs with the cost chosen by 3-fold cross-validation on trainval, mAP on test.")
    add_backbone_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", required=True, choices=tuple(DEFAULT_SPLITS))
    g.add_argument("--data-dir", required=True, help="root of the data set in its published layout")
    g.add_argument("--image-root", default=None, help="places205: folder of the images if not under --data-dir")
    g.add_argument("--train-split", default=None)
    g.add_argument("--val-split", default=None)
    g = p.add_argument_group("protocol")
    g.add_argument("--protocol", choices=("fast", "paper"), default="fast", help="single-label data sets only")
    add_linear_protocol_args(g)
    return p


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    from barlowtwins.data.datasets import labelled_folder
    from barlowtwins.data.transfer import build_transfer_dataset
    from barlowtwins.evaluate.results import result_path, write_result
    from barlowtwins.runtime import distributed as D

    setup = setup_backbone(args)
    train_split = args.train_split or DEFAULT_SPLITS[args.dataset][0]
    val_split = args.val_split or DEFAULT_SPLITS[args.dataset][1]
    if args.dataset == "folder":
        train, val = labelled_folder(args.data_dir, train_split), labelled_folder(args.data_dir, val_split)
    else:
        train = build_transfer_dataset(args.dataset, args.data_dir, train_split, args.image_root)
        val = build_transfer_dataset(args.dataset, args.data_dir, val_split, args.image_root)
    names = (args.dataset, train_split, val_split)
    if args.dataset == "voc2007":
        from barlowtwins.evaluate.protocols import svm_protocol

        result = svm_protocol(setup, train, val, names=names, batch_size=args.batch_size, workers=args.workers)
    else:
        from barlowtwins.evaluate.protocols import linear_protocol

        result = linear_protocol(setup, train, val, names=names, protocol=args.protocol, prefix="transfer-linear",
                                 epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                 weight_decay=args.weight_decay, seed=args.seed, workers=args.workers, counts=True)
    if D.is_main_process():
        path = result_path(result.protocol, args.dataset, args.checkpoint, args.output,
                           "random" if args.random_init else "")
        write_result(result.to_record(), path)
        print(f"transfer ({result.protocol}) {args.dataset} {val_split}: {result.summary()}  [{path}]")
    return 0
