"""``barlowtwins shard``: a folder of images -> WebDataset tar shards with a manifest (`data.shard_writer`)."""

from __future__ import annotations

import argparse

from barlowtwins.cli.common import report_skipped
from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.shard_writer import parse_size, write_shards
from barlowtwins.errors import ConfigError
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="write WebDataset shards (.tar + manifest.json) from a folder",
                       description="Shuffle the images of a folder once and write them as WebDataset tar shards "
                                   "of about --shard-size each, with manifest.json (samples and member offsets, "
                                   "sizes, SHA-256). Labelled folders (--dataset folder) store each label as "
                                   "<key>.cls. Rerun the same command to finish an interrupted run: complete "
                                   "shards are kept. Train on them with --dataset webdataset --data-dir OUT.")
    p.add_argument("--data-dir", required=True, help="the images (any depth), or a labelled folder with --dataset "
                                                     "folder")
    p.add_argument("--dataset", default="images", choices=("images", "folder"),
                   help="images: every image under --data-dir, unlabelled (default); folder: <split>/<class>/*")
    p.add_argument("--split", default="train", help="--dataset folder: the split to shard (default: train)")
    p.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    p.add_argument("--shard-size", default="500MB", help="target size of a shard, e.g. 500MB, 1GB (default: 500MB)")
    p.add_argument("--prefix", default=None, help="shard names <prefix>-000000.tar (default: the split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the one shuffle")
    p.add_argument("--workers", type=int, default=0, help="processes writing shards in parallel (default: 0, this "
                                                          "one)")
    return p


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.shard_size)
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: give 0 or more")
    check_writable(f"{args.out}/manifest.json", flag="--out")
    dataset = build_dataset(args.dataset, args.data_dir, args.split)
    result = write_shards(dataset, args.out, size, seed=args.seed, workers=args.workers,
                          prefix=args.prefix or args.split)
    kept = f" ({result.kept} kept from an earlier run)" if result.kept else ""
    print(f"wrote {result.samples} images in {result.shards} shards to {result.out}{kept} in "
          f"{result.seconds:.1f} s; train on them: --dataset webdataset --data-dir {result.out}")
    report_skipped(result.skipped)
    return 0
