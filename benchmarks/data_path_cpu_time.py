"""CPU time per two-view sample of the `cpu` data path's worker work against the official per-image PIL pipeline.

    python benchmarks/data_path_cpu_time.py [--images 200] [--repeats 3]

Both from the same synthetic JPEGs (350-500 px, quality 90; `barlowtwins.bench.make_jpeg_folder`), both
views at
224 px, decode included, one thread, alternated ``--repeats`` times. Process CPU time, not wall time: on a shared
machine it is much less disturbed by other jobs than samples/s, and when the loader workers keep every core busy
it is what bounds the data path's throughput. (The official pipeline's extra cost of moving float32 views, 4x the
bytes of our uint8 ones, to the main process is not counted here; `barlowtwins bench` measures the whole loader.)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from barlowtwins.bench.jpegs import make_jpeg_folder
from barlowtwins.bench.official import _OfficialFiles
from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.paths.cpu import _PilViews
from barlowtwins.transforms.hue_shift import tables
from barlowtwins.transforms.spec import augment_config


def cpu_ms_per_sample(fn, n: int) -> float:
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image-size", type=int, default=224)
    args = p.parse_args()
    torch.set_num_threads(1)
    tables()  # the hue lookup tables, built once per process before the workers start (as `CpuPath` does)
    with tempfile.TemporaryDirectory() as tmp:
        files = list(build_dataset("images", make_jpeg_folder(tmp, args.images)).files)
        ours = _PilViews(files, augment_config(args.image_size), 0, False)
        official = _OfficialFiles(files, args.image_size)
        rows = []
        for r in range(args.repeats):
            a = cpu_ms_per_sample(lambda i: ours[(i, r, i)], len(files))
            b = cpu_ms_per_sample(lambda i: official[i], len(files))
            rows.append((a, b))
            print(f"repeat {r}: ours {a:.2f} ms/sample, official {b:.2f} ms/sample, ratio {b / a:.2f}", flush=True)
    a = sum(x for x, _ in rows) / len(rows)
    b = sum(y for _, y in rows) / len(rows)
    print(f"mean: ours {a:.2f} ms/sample, official {b:.2f} ms/sample: the official pipeline needs {b / a:.2f}x the CPU")


if __name__ == "__main__":
    main()
