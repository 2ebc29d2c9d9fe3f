"""``barlowtwins embed``: a folder or data set -> float32 embeddings (.npy), an index of its files, metadata."""

from __future__ import annotations

import argparse
import os
import time

from barlowtwins.cli.common import (
    add_architecture_args,
    add_column_args,
    add_device_args,
    add_strict_data_arg,
    check_data,
    leaves_process_group,
    printable,
    report_skipped,
)
from barlowtwins.data.bad_files import collect_bad_files
from barlowtwins.data.datasets import DATASETS, build_dataset, data_options
from barlowtwins.errors import ConfigError
from barlowtwins.evaluate.backbone import load_eval_backbone
from barlowtwins.evaluate.embeddings import index_entries, resolve_index_format, sidecar_paths, write_embeddings
from barlowtwins.evaluate.features import extract_features_kept
from barlowtwins.runtime import distributed as D
from barlowtwins.runtime.console import on_terminal
from barlowtwins.runtime.files import check_writable
from barlowtwins.version import __version__
from barlowtwins.weights.load import warn_default_image_size


def add_model_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    """Backbone and hardware flags shared by `embed` and `neighbors`."""
    g = p.add_argument_group("backbone")
    g.add_argument("--checkpoint", required=required, default=None, metavar="SOURCE",
                   help="run folder, backbone.pth/.safetensors, official resnet50.pth or full checkpoint, our "
                        "checkpoint.pth, or torchvision:<model>:<weights>")
    add_architecture_args(g)
    h = p.add_argument_group("hardware")
    add_device_args(h)
    h.add_argument("--batch-size", type=int, default=256)


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="embed a folder or data set (.npy + index of file paths)",
                       description="Encode every image of a folder or data set with a pretrained backbone and write "
                                   "float32 (N, D) features to OUTPUT (.npy), an index of the file paths next to it "
                                   "(OUTPUT.index.csv, or .parquet with pyarrow) and OUTPUT.meta.json (which "
                                   "backbone and preprocessing; `barlowtwins neighbors` reads it). Runs under "
                                   "torchrun: each process encodes its shard, rank 0 writes.")
    add_model_args(p)
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="images",
                   help=f"one of {', '.join(DATASETS)}; images: every image under --data-dir (default); folder: "
                        "<split>/<class>/")
    g.add_argument("--data-dir", default=None)
    g.add_argument("--split", default="train", help="folder and built-in data sets: which split (default: train)")
    g.add_argument("--download", action="store_true", help="let torchvision download CIFAR/STL-10")
    add_column_args(g)
    add_strict_data_arg(g)
    o = p.add_argument_group("output")
    o.add_argument("--output", required=True, metavar="FILE", help="embeddings file, e.g. emb.npy")
    o.add_argument("--index-format", default="auto", choices=("auto", "csv", "parquet"),
                   help="auto: parquet when pyarrow is installed, else csv")
    return p


def setup_from_args(args: argparse.Namespace, checkpoint: str, arch: dict | None = None):
    """The backbone of ``checkpoint`` (flags, then ``arch``, over what it records); one warning line when nothing
    gives the input size (224 px is then used)."""
    arch = arch or {}
    setup = load_eval_backbone(checkpoint, backbone=args.backbone or arch.get("backbone"),
                               stem=args.stem or arch.get("stem"), width=args.width or arch.get("width"),
                               image_size=args.image_size or arch.get("image_size"), mean=args.mean or arch.get("mean"),
                               std=args.std or arch.get("std"), device=args.device, precision=args.precision,
                               cache_dir=None)
    if not setup.arch.get("image_size") and D.is_main_process():
        warn_default_image_size(printable(checkpoint))
    return setup


@leaves_process_group
def run(args: argparse.Namespace) -> int:
    if not str(args.output).endswith(".npy"):
        raise ConfigError(f"--output {args.output}: name the embeddings file with .npy, e.g. emb.npy")
    fmt = resolve_index_format(args.index_format)  # refuse parquet without pyarrow before any work
    paths = sidecar_paths(args.output)
    for key in ("npy", fmt, "meta"):  # the three files it writes: each can be written, before any work
        check_writable(paths[key])
    dataset = build_dataset(args.dataset, args.data_dir, args.split, args.download,
                            **data_options(args, args.dataset))
    check_data(args, dataset)
    setup = setup_from_args(args, args.checkpoint)
    tty = on_terminal()
    t0 = time.time()
    if D.is_main_process() and not tty:
        print(f"embedding {len(dataset)} images with {setup.checkpoint} ...", flush=True)
    with collect_bad_files() as bad:  # unreadable files are left out of the embeddings and their index
        feats, labels, kept = extract_features_kept(setup.backbone, dataset, image_size=setup.image_size,
                                                    device=setup.device, batch_size=args.batch_size,
                                                    amp_dtype=setup.amp_dtype, mean=setup.mean, std=setup.std,
                                                    workers=args.workers, progress=tty)
    if D.is_main_process():
        source = args.checkpoint
        if not source.startswith("torchvision:") and os.path.exists(source):
            source = os.path.abspath(source)
        meta = {"barlowtwins_version": __version__, "checkpoint": source, "origin": setup.checkpoint,
                "checkpoint_sha256": setup.checkpoint_sha256, "arch": setup.describe()["backbone"],
                "image_size": setup.image_size, "mean": list(setup.mean), "std": list(setup.std),
                "dataset": args.dataset, "data_dir": os.path.abspath(args.data_dir) if args.data_dir else None,
                "split": args.split, "preprocessing": "resize to image_size/0.875, centre crop (folders); "
                                                      "normalised only (in-memory data sets)",
                "skipped_files": len(bad), "skipped": bad.as_list()}
        entries = index_entries(dataset, args.dataset, args.split)
        if len(kept) != len(entries):
            entries = [entries[i] for i in kept.tolist()]
        paths = write_embeddings(args.output, feats, entries, labels, meta, args.index_format)
        print(f"wrote {feats.shape[0]} x {feats.shape[1]} float32 embeddings to {paths['npy']} "
              f"(index {paths['index'].name}, metadata {paths['meta'].name}) in {time.time() - t0:.1f} s")
        report_skipped(bad.as_list())
    return 0
