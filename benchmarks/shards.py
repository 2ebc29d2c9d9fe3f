"""WebDataset shards against the folder they were written from: two-view samples/s on the cpu data path, and
the time to the first batch of a run resumed early, half-way and late in an epoch.

    python benchmarks/shards.py                          # 2048 JPEGs of 224 px, 224-px views, batch 64
    python benchmarks/shards.py --images 4096 --jpeg-size 350 500 --repeats 5

Both sources hold the same files (`barlowtwins shard` writes the shards) and go through the same data path with
the same views; only where the bytes come from differs. Throughput runs alternate between the two, `--repeats`
times, and report medians, so a slow minute of the machine touches both alike. Run it alone on the machine.
Appends a table to benchmarks/RESULTS.md and writes the figures to benchmarks/results/<stamp>-shards.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, RESULTS, append_block, machine  # noqa: E402

from barlowtwins.bench import make_jpeg_folder, time_batches  # noqa: E402
from barlowtwins.data.datasets import build_dataset  # noqa: E402
from barlowtwins.data.pipeline import build_pipeline  # noqa: E402
from barlowtwins.data.sampling import default_workers  # noqa: E402
from barlowtwins.data.shard_writer import write_shards  # noqa: E402
from barlowtwins.transforms.spec import augment_config  # noqa: E402

CPU = torch.device("cpu")


def throughput(dataset, args) -> float:
    pipe = build_pipeline(dataset, augment_config(args.image_size), batch_size=args.batch_size, seed=0, device=CPU,
                          data_path="cpu", workers=args.workers)
    state = {"step": 0}

    def batches():
        epoch = 0
        while True:
            for batch, _, _ in pipe.epoch(epoch):
                yield batch
            epoch += 1

    def views(batch):
        out = pipe.views(batch, state["step"])
        state["step"] += 1
        return out

    try:
        return time_batches(batches(), views, args.batch_size, args.iters, args.warmup, CPU)
    finally:
        pipe.close()


def first_batch_seconds(dataset, start: int, args) -> float:
    """A fresh pipeline (workers started anew, as in a resumed process) asked for batch ``start`` of epoch 3."""
    t0 = time.perf_counter()
    pipe = build_pipeline(dataset, augment_config(args.image_size), batch_size=args.batch_size, seed=0, device=CPU,
                          data_path="cpu", workers=args.workers)
    batch, _, _ = next(iter(pipe.epoch(3, start=start)))
    pipe.views(batch, 3 * len(pipe) + start)
    seconds = time.perf_counter() - t0
    pipe.close()
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2048)
    p.add_argument("--jpeg-size", type=int, nargs=2, default=(224, 224), metavar=("MIN", "MAX"))
    p.add_argument("--image-size", type=int, default=224, help="view size")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="loader processes (default: per CPU count)")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shard-size", type=int, default=64 * 2 ** 20, help="bytes per shard")
    p.add_argument("--work", default=None, help="folder for the JPEGs and shards (default: a temporary one)")
    args = p.parse_args()
    args.workers = default_workers() if args.workers is None else args.workers

    with tempfile.TemporaryDirectory(prefix="barlowtwins-shards-") as tmp:
        work = Path(args.work or tmp)
        folder = make_jpeg_folder(work / "jpegs", args.images, tuple(args.jpeg_size))
        t0 = time.perf_counter()
        written = write_shards(build_dataset("images", folder), work / "shards", args.shard_size, seed=0)
        shard_seconds = time.perf_counter() - t0
        sources = {"folder": build_dataset("images", folder), "shards": build_dataset("webdataset", work / "shards")}
        runs: dict[str, list[float]] = {k: [] for k in sources}
        for r in range(args.repeats):
            for name, ds in sources.items():
                runs[name].append(throughput(ds, args))
                print(f"{name}: {runs[name][-1]:.1f} two-view samples/s (run {r + 1} of {args.repeats})", flush=True)
        steps = len(sources["folder"]) // args.batch_size
        starts = {"start": 0, "half-way": steps // 2, "last batch": steps - 1}
        resume = {name: {where: statistics.median(first_batch_seconds(ds, k, args) for _ in range(args.repeats))
                         for where, k in starts.items()} for name, ds in sources.items()}
    rates = {k: statistics.median(v) for k, v in runs.items()}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    record = {"machine": machine(), "date": stamp, "torch": torch.__version__, "args": vars(args),
              "shards": written.shards, "shard_seconds": shard_seconds, "runs": runs, "samples_per_sec": rates,
              "first_batch_seconds": resume}
    out = HERE / "results" / f"{stamp}-shards.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=1))
    rows = [[name, f"{rates[name]:.1f}", *(f"{resume[name][w]:.2f}" for w in starts)] for name in sources]
    header = (f"WebDataset shards against their folder, cpu data path ({stamp}, {machine()}, torch "
              f"{torch.__version__}; {args.images} JPEGs of {args.jpeg_size[0]}-{args.jpeg_size[1]} px in "
              f"{written.shards} shards, {args.image_size}-px views, batch {args.batch_size}, {args.workers} "
              f"workers, medians of {args.repeats})")
    block = append_block(RESULTS, header, ["source", "two-view samples/s",
                                           *(f"first batch of a resume at the {w} (s)" for w in starts)], rows)
    print(block)
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
