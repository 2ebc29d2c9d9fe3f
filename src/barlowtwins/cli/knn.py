"""``barlowtwins knn``: weighted kNN on frozen, L2-normalised features (k = 20 and 200, T = 0.07)."""

from __future__ import annotations

import argparse

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
from barlowtwins.evaluate.protocols import knn_protocol
from barlowtwins.evaluate.results import result_path, write_result
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="weighted kNN evaluation of a backbone",
                       description="Weighted kNN (Wu et al., 2018) on L2-normalised frozen features: each test image "
                                   "is classified by its k most similar training images, weighted by exp(sim/T).")
    add_backbone_args(p)
    add_data_args(p)
    g = p.add_argument_group("kNN")
    g.add_argument("--k", type=int, nargs="+", default=[20, 200], help="neighbour counts (default: 20 200)")
    g.add_argument("--temperature", type=float, default=0.07)
    g.add_argument("--batch-size", type=int, default=256, help="feature extraction batch")
    g.add_argument("--compare-random", action="store_true",
                   help="also evaluate the same architecture at random initialisation and print both")
    return p


def knn_result_path(args: argparse.Namespace, dataset: str, random_init: bool):
    """Where a kNN result goes; with ``--output FILE`` the random-init baseline of ``--compare-random`` goes to
    ``FILE-random.json`` beside it, not over it."""
    path = result_path("knn", dataset, args.checkpoint, args.output, "random" if random_init else "")
    if random_init and args.compare_random and path == result_path("knn", dataset, args.checkpoint, args.output):
        path = path.with_name(f"{path.stem}-random{path.suffix or '.json'}")
    return path


def evaluate_knn(args: argparse.Namespace, random_init: bool):
    """Run the kNN protocol, write its result (rank 0) and print one line; returns the `EvalResult`."""
    args.random_init = random_init
    setup = setup_backbone(args)
    dataset, data_dir, val_split = resolve_data(args, setup.arch)
    path = knn_result_path(args, dataset, random_init)
    check_writable(path)  # before any work, not after it
    if args.compare_random and not random_init:  # the baseline's file too: its name is longer
        check_writable(knn_result_path(args, dataset, True))
    train = build_dataset(dataset, data_dir, args.train_split, args.download, **data_options(args, dataset))
    val = build_dataset(dataset, data_dir, val_split, args.download, **data_options(args, dataset))
    check_data(args, train, val)
    result = knn_protocol(setup, train, val, names=(dataset, args.train_split, val_split), k=tuple(args.k),
                          temperature=args.temperature, batch_size=args.batch_size, workers=args.workers)
    if D.is_main_process():
        write_result(result.to_record(), path)
        who = "random init" if random_init else "pretrained"
        print(f"kNN {dataset} {val_split} ({who}): {result.summary()}  [{path}]")
    return result


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    pretrained = evaluate_knn(args, random_init=args.random_init)
    skipped = pretrained.skipped
    if args.compare_random and not args.random_init:
        random = evaluate_knn(args, random_init=True)
        skipped = list({s["file"]: s for s in skipped + random.skipped}.values())  # the same files: listed once
        if D.is_main_process():
            for k in pretrained.metrics:
                a, b = pretrained.metrics[k]["top1"], random.metrics[k]["top1"]
                print(f"kNN {k} top-1: pretrained {a:.2f} vs random init {b:.2f} ({a - b:+.2f} points)")
    report_skipped(skipped)
    return 0
