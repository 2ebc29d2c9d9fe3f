"""``barlowtwins shard``: a folder of images -> WebDataset tar shards with a manifest (`data.shard_writer`)."""

from __future__ import annotations

import argparse

from barlowtwins.cli.common import report_skipped
from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.shard_writer import check_prefix, parse_size, write_shards
from barlowtwins.errors import ConfigError
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="write WebDataset shards (.tar + manifest.json) from a folder",
                       description="Shuffle the images of a folder once and write them as WebDataset tar shards "
                                   "of about --shard-size each, with manifest.json (samples and member offsets, "
                                   "sizes, SHA-256). Labelled folders (--dataset folder) store each label as "
                                   "<key>.cls. Rerun the same command to finish an interrupted run: shards "
                                   "whose SHA-256 still matches the manifest are kept, damaged ones written again. "
                                   "Another source, --shard-size, --seed or --prefix into the same --out is refused "
                                   "unless --overwrite. Train on them with --dataset webdataset --data-dir OUT.")
    p.add_argument("--data-dir", required=True, help="the images (any depth), or a labelled folder with --dataset "
                                                     "folder")
    p.add_argument("--dataset", default="images", choices=("images", "folder"),
                   help="images: every image under --data-dir, unlabelled (default); folder: <split>/<class>/*")
    p.add_argument("--split", default="train", help="--dataset folder: the split to shard (default: train)")
    p.add_argument("--out", required=True, help="folder for the shards and manifest.json")
    p.add_argument("--shard-size", default="500MB", help="target size of a shard, e.g. 500MB, 1GB (default: 500MB)")
    p.add_argument("--prefix", default=None, help="shard names <prefix>-000000.tar (default: the split)")
    p.add_argument("--seed", type=int, default=0, help="seed of the one shuffle")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the shards an earlier run wrote into --out with another plan (source, size, seed "
                        "or prefix); only files its manifest lists are removed")
    p.add_argument("--workers", type=int, default=0, help="processes writing shards in parallel (default: 0, this "
                                                          "one)")
    return p


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.shard_size)
    if args.workers < 0:
        raise ConfigError(f"--workers {args.workers}: give 0 or more")
    check_writable(f"{args.out}/manifest.json", flag="--out")
    dataset = build_dataset(args.dataset, args.data_dir, args.split)
    check_prefix(args.prefix or args.split)
    result = write_shards(dataset, args.out, size, seed=args.seed, workers=args.workers,
                          prefix=args.prefix or args.split, overwrite=args.overwrite)
    if result.replaced_plan:
        print(f"replaced the {result.removed} shards of an earlier run in {result.out} ({result.replaced_plan})")
    elif result.removed:
        print(f"removed {result.removed} shards of an earlier run beyond this plan")
    if result.rewritten:
        print(f"wrote again {len(result.rewritten)} shards whose bytes no longer matched the manifest "
              f"({', '.join(result.rewritten[:3])}{' ...' if len(result.rewritten) > 3 else ''})")
    kept = f" ({result.kept} kept from an earlier run, checked against their SHA-256)" if result.kept else ""
    print(f"wrote {result.samples} images in {result.shards} shards to {result.out}{kept} in "
          f"{result.seconds:.1f} s; train on them: --dataset webdataset --data-dir {result.out}")
    report_skipped(result.skipped)
    return 0
