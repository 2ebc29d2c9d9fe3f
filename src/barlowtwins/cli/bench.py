"""``barlowtwins bench``: throughput of the model, of each data path and of both together, against the official
per-image PIL pipeline; prints a table, saves JSON and appends a row to a RESULTS.md. Both files are written after
every measurement (a later failure, or a kill, loses nothing already measured); a measurement that failed is
named in one line each and the exit status is 1."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from barlowtwins.bench import (
    BenchResult,
    BenchSpec,
    append_results,
    make_jpeg_folder,
    run_bench,
    save_json,
    table,
)
from barlowtwins.cli.common import add_strict_data_arg, printable, report_skipped
from barlowtwins.data.pipeline import AUTO, DATA_PATHS
from barlowtwins.errors import ConfigError
from barlowtwins.models.backbones import MAX_IMAGE_SIZE, MAX_WIDTH, STEMS, check_int
from barlowtwins.runtime.hardware import PRECISION_HELP, select_device


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="measure model, data-path and end-to-end throughput",
                       description="Measure two-view samples/s: the model alone on synthetic device tensors, each "
                                   "data path alone and end to end from a JPEG folder (or an in-memory data set), "
                                   "and the official per-image PIL pipeline with the same workers; FLOPs, MFU and "
                                   "peak memory. Example: barlowtwins bench --backbone resnet50 --image-size 224 "
                                   "--batch-size 64 --data-path cpu --workers 2 --make-jpegs 600 --jpeg-size 350 500 "
                                   "--results benchmarks/RESULTS.md")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default="resnet50")
    m.add_argument("--stem", default="standard", choices=STEMS)
    m.add_argument("--width", type=int, default=None, help="ResNet first-stage width (default: torchvision's)")
    m.add_argument("--projector", default="8192-8192-8192")
    m.add_argument("--image-size", type=int, default=224)
    m.add_argument("--batch-size", type=int, default=64, help="samples per step (two views each)")
    m.add_argument("--precision", default="auto", help=PRECISION_HELP)
    m.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    d = p.add_argument_group("data")
    d.add_argument("--data-path", nargs="+", default=None, choices=tuple(DATA_PATHS),
                   help="data paths to time on the JPEG folder (default: cpu, plus device on a GPU): " +
                        "; ".join(f"{n}: {s.description}" for n, s in DATA_PATHS.items()))
    d.add_argument("--workers", type=int, default=None, help="loader processes (default: per CPU count)")
    d.add_argument("--jpeg-dir", default=None, help="a folder of images to read (any depth)")
    d.add_argument("--make-jpegs", type=int, default=0, metavar="N",
                   help="write N synthetic JPEGs (quality 90) into --jpeg-dir, or a temporary folder, first")
    d.add_argument("--jpeg-size", type=int, nargs=2, default=(350, 500), metavar=("MIN", "MAX"),
                   help="side lengths of the synthetic JPEGs (default: 350 500, ImageNet-like)")
    d.add_argument("--dataset", default=None,
                   help="time an in-memory data set instead of a folder (e.g. fashion-mnist; path 'memory')")
    d.add_argument("--data-dir", default=None, help="where --dataset lives")
    d.add_argument("--no-official", action="store_true", help="skip the official PIL pipeline")
    d.add_argument("--shards", action="store_true",
                   help="also read the same images from WebDataset shards (written to a temporary folder)")
    add_strict_data_arg(d)
    t = p.add_argument_group("timing and output")
    t.add_argument("--iters", type=int, default=20, help="timed batches per measurement")
    t.add_argument("--warmup", type=int, default=3, help="untimed batches first")
    t.add_argument("--repeats", type=int, default=3,
                   help="run every measurement this many times, in turn, and report the medians")
    t.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="per run of a measurement: its timing ends after the batch in hand once SECONDS have "
                        "passed, and a run still going at 1.5 x SECONDS is stopped and reported as failed "
                        "(default: no limit)")
    t.add_argument("--output", default=None, metavar="JSON",
                   help="save the result as JSON here (after every measurement)")
    t.add_argument("--results", default=None, metavar="MD",
                   help="append a row to this RESULTS.md (kept up to date after every measurement)")
    return p


def _saver(args: argparse.Namespace):
    """``save(result)``: the JSON and the RESULTS.md row as they stand (the row rewritten in place each time)."""
    state: dict = {"row": None}

    def save(result: BenchResult) -> None:
        if args.output:
            save_json(args.output, result)
        if args.results:
            state["row"] = append_results(args.results, result, replace=state["row"])

    return save


def run(args: argparse.Namespace) -> int:
    for flag in ("image_size", "batch_size", "iters", "repeats"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if args.warmup < 0 or args.make_jpegs < 0 or (args.workers is not None and args.workers < 0):
        raise ConfigError("--warmup, --make-jpegs and --workers cannot be negative")
    if args.time_limit is not None and not args.time_limit > 0:
        raise ConfigError(f"--time-limit must be a positive number of seconds, got {args.time_limit}")
    check_int("--image-size", args.image_size, 1, MAX_IMAGE_SIZE)
    if args.width is not None:
        check_int("--width", args.width, 1, MAX_WIDTH)
    if not 1 <= args.jpeg_size[0] <= args.jpeg_size[1] <= MAX_IMAGE_SIZE:
        raise ConfigError(f"--jpeg-size MIN MAX needs 1 <= MIN <= MAX <= {MAX_IMAGE_SIZE}, got {args.jpeg_size[0]} "
                          f"{args.jpeg_size[1]}")
    if args.dataset is None and args.jpeg_dir is None and not args.make_jpegs:
        raise ConfigError("give images to read: --jpeg-dir DIR, --make-jpegs N (synthetic), or --dataset NAME")
    if args.dataset is None and args.jpeg_dir and not args.make_jpegs and not os.path.isdir(args.jpeg_dir):
        raise ConfigError(f"--jpeg-dir {args.jpeg_dir} is not a folder; give a folder of images, or add "
                          "--make-jpegs N to write N synthetic JPEGs there")
    device = select_device(args.device)
    paths = tuple(args.data_path or (("cpu", "device") if device.type == "cuda" else ("cpu",)))
    if args.dataset:
        paths = (AUTO,)  # in-memory data has one path
    spec = BenchSpec(backbone=args.backbone, stem=args.stem, width=args.width, projector=args.projector,
                     image_size=args.image_size, batch_size=args.batch_size, precision=args.precision,
                     device=args.device, data_paths=paths, workers=args.workers, iters=args.iters,
                     warmup=args.warmup, repeats=args.repeats, official=not args.no_official, dataset=args.dataset,
                     data_dir=args.data_dir, strict_data=args.strict_data, shards=args.shards,
                     time_limit=args.time_limit)
    with tempfile.TemporaryDirectory(prefix="barlowtwins-bench-") as tmp:
        jpeg_dir = args.jpeg_dir
        if args.make_jpegs:
            jpeg_dir = jpeg_dir or tmp
            make_jpeg_folder(jpeg_dir, args.make_jpegs, tuple(args.jpeg_size))
        result = run_bench(spec, jpeg_dir=jpeg_dir, on_update=_saver(args))
    print(table(result))
    report_skipped(result.skipped)
    if args.output:
        print(f"saved {args.output}")
    if args.results:
        print(f"added a row to {args.results}")
    for name, why in result.errors.items():
        print(f"barlowtwins bench: error: {printable(name)} failed: {printable(why)}", file=sys.stderr)
    return 1 if result.errors else 0
