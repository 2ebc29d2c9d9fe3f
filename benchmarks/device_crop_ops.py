"""Ops per view of the device path's crop (`transforms.resize`) against the number of distinct image sizes in a
batch: the per-group algorithm it replaced (one pair of matmuls per group of same-shape images, copied here as
the reference) against the padded batch (a fixed number of ops per chunk, one copy per image).

    python benchmarks/device_crop_ops.py [--batch 64] [--distinct 1 8 64] [--size 32]

Counts, not timings: every op the crop dispatches, counted with a ``TorchDispatchMode`` on CPU tensors (what
launches a kernel on a GPU is the ops that are not views, counted apart), for one view of a batch whose images
have 1, 8, ... distinct sizes (30-90 px, portrait and landscape; the op counts do not depend on the pixel
sizes). Also the padded pixels of the batched crop per image pixel for ImageNet-like photos (500 px on the long
side, a quarter portrait) at batch 128, from the layout alone. Prints a table; writes
benchmarks/results/<stamp>-device-crop-ops.json with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import numpy as np
import torch
from common import HERE, machine
from torch.utils._python_dispatch import TorchDispatchMode

import barlowtwins
from barlowtwins.transforms.device import crop_resize_each
from barlowtwins.transforms.resize import (
    CHUNK_PIXELS,
    _to,
    crop_resize_padded,
    padded_layout,
    resize_weights,
)


def _groups(images: list[torch.Tensor]) -> list[list[int]]:
    """The reference's groups: indices of same-shape images, in chunks of at most `CHUNK_PIXELS` source pixels."""
    by_shape: dict[tuple, list[int]] = {}
    for k, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape), []).append(k)
    chunks = []
    for shape, idx in by_shape.items():
        per = max(1, CHUNK_PIXELS // max(1, shape[-1] * shape[-2]))
        chunks += [idx[s: s + per] for s in range(0, len(idx), per)]
    return chunks


def crop_resize_per_group(images: list[torch.Tensor], boxes: torch.Tensor, size: int,
                          mode: str = "bicubic") -> torch.Tensor:
    """The per-group algorithm the padded batch replaced (the package's ``crop_resize_grouped`` before it): one
    pair of matmuls, and one build of the weights, per group of same-shape images."""
    device = images[0].device
    groups = _groups(images)
    order = [k for idx in groups for k in idx]
    boxes = _to(boxes.to(torch.float32)[order], device)  # (n, 4) in group order
    outs, start = [], 0
    for idx in groups:
        x = torch.stack([images[k] for k in idx]).float()  # (g, 3, H, W), 0..255
        h_in, w_in = x.shape[-2:]
        b = boxes[start: start + len(idx)]
        start += len(idx)
        wh = resize_weights(b[:, 0], b[:, 2], h_in, size, mode).mul_(1 / 255)  # (g, S, H)
        ww = resize_weights(b[:, 1], b[:, 3], w_in, size, mode)  # (g, S, W)
        if h_in >= w_in:
            y = (wh.unsqueeze(1) @ x) @ ww.transpose(1, 2).unsqueeze(1)
        else:
            y = wh.unsqueeze(1) @ (x @ ww.transpose(1, 2).unsqueeze(1))
        outs.append(y)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if order != sorted(order):
        out = out.index_select(0, _to(torch.from_numpy(np.argsort(order)), device))
    return out.clamp_(0, 1) if mode == "bicubic" else out


class OpCount(TorchDispatchMode):
    """Dispatched ops, and apart those that are not views (kernels on a GPU)."""

    def __init__(self):
        super().__init__()
        self.ops = self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def batch_of(n: int, distinct: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """n uint8 images with ``distinct`` different sizes (each repeated), and a random box in each."""
    rng = np.random.default_rng(seed)
    kinds: list[tuple[int, int]] = []
    while len(kinds) < distinct:
        hw = (int(rng.integers(30, 90)), int(rng.integers(30, 90)))
        if hw not in kinds:
            kinds.append(hw)
    shapes = [kinds[k % distinct] for k in range(n)]
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for h, w in shapes]
    boxes = []
    for h, w in shapes:
        bh, bw = int(rng.integers(h // 3, h + 1)), int(rng.integers(w // 3, w + 1))
        boxes.append([int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1)), bh, bw])
    return images, torch.tensor(boxes, dtype=torch.float64)


def count(fn, images, boxes, size: int) -> OpCount:
    with OpCount() as c:
        fn(images, boxes, size)
    return c


def host_ms(fn, images, boxes, size: int, repeats: int = 5) -> float:
    """Host milliseconds per view with the images on the ``meta`` device: every op is dispatched and its output
    shape computed, but no arithmetic runs, so this is the time the host spends issuing the crop (what a GPU step
    waits for when the crop is launch-bound), the median of ``repeats``. Run it alone on the machine."""
    meta = [img.to("meta") for img in images]
    fn(meta, boxes, size)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(meta, boxes, size)
        times.append((time.perf_counter() - t0) * 1000)
    return round(float(np.median(times)), 2)


def padding(shapes: list[tuple[int, int]], transpose: bool) -> float:
    """Padded pixels of the batched crop's buffers per image pixel (``transpose=False``: portraits placed as they
    are, the layout without the orientation step, for comparison)."""
    hw = np.asarray(shapes)
    if transpose:
        _, placed, order, chunks = padded_layout(hw)
    else:  # the same sort and budget, every image upright: one chunk per budget, padded to the largest H and W
        placed, order = hw, np.lexsort((-hw[:, 0], -hw[:, 1]))
        chunks = [(0, len(hw))] if len(hw) * hw[:, 0].max() * hw[:, 1].max() <= CHUNK_PIXELS else None
        if chunks is None:
            return float("nan")
    padded = sum((b - a) * placed[order[a:b], 0].max() * placed[order[a:b], 1].max() for a, b in chunks)
    return float(padded / (hw[:, 0] * hw[:, 1]).sum())


def imagenet_like(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """(height, width) of n photos: 500 px on the long side, the short 333-375 px, a quarter portrait."""
    rng = np.random.default_rng(seed)
    short = rng.integers(333, 376, n)
    return [(500, int(s)) if k % 4 == 0 else (int(s), 500) for k, s in enumerate(short)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--distinct", type=int, nargs="+", default=[1, 8, 64])
    p.add_argument("--size", type=int, default=32, help="output side of the views (the counts do not depend on it)")
    args = p.parse_args()
    methods = {"per group (before)": crop_resize_per_group, "padded batch (after)": crop_resize_padded,
               "per image (crop_resize_each)": crop_resize_each}
    rows = []
    for d in args.distinct:
        images, boxes = batch_of(args.batch, d)
        for name, fn in methods.items():
            c = count(fn, images, boxes, args.size)
            rows.append({"distinct_sizes": d, "batch": args.batch, "method": name, "ops_per_view": c.ops,
                         "kernels_per_view": c.kernels, "host_ms_per_view": host_ms(fn, images, boxes, args.size)})
    shapes = imagenet_like(128)
    pad = {"batch": 128, "shapes": "500 px long side, 333-375 short, 1 in 4 portrait",
           "padded_per_image_pixel": round(padding(shapes, True), 3),
           "padded_per_image_pixel_without_transposing_portraits": round(padding(shapes, False), 3)}

    print(f"ops per view of the device path's crop, batch {args.batch} (dispatched ops; kernels = not views)")
    print(f"{'distinct sizes':>14}  {'method':30s} {'ops':>7} {'kernels':>8} {'host ms (meta)':>15}")
    for r in rows:
        print(f"{r['distinct_sizes']:>14}  {r['method']:30s} {r['ops_per_view']:>7} {r['kernels_per_view']:>8} "
              f"{r['host_ms_per_view']:>15}")
    print(f"padded pixels per image pixel, ImageNet-like batch of 128: {pad['padded_per_image_pixel']} "
          f"({pad['padded_per_image_pixel_without_transposing_portraits']} without transposing portraits)")

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"{stamp}-device-crop-ops.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"machine": machine(), "platform": platform.platform(), "python": platform.python_version(),
            "date": stamp, "barlowtwins": barlowtwins.__version__, "torch": torch.__version__,
            "size": args.size, "rows": rows, "padding": pad}
    out.write_text(json.dumps(meta, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
