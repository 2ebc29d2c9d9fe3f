"""A photo-like image set for the "your own photos" benchmark: scenes with one object of five shape classes.

Each image is a scene, not noise: a two-colour gradient background with soft blobs, texture and clutter (lines and
small outlines), and one filled object (circle, square, triangle, star or cross) of random colour, size (20-55% of
the short side), position and rotation, with a shadow; sizes 300-600 px, aspect ratios 3:4 to 4:3, JPEG quality
80-95. The class is the object's shape only: colour, size, place and background are random, so a backbone has to
learn shape to separate them (colour histograms do not).

    python benchmarks/photo_scenes.py --out data/scenes --train 100 --val 40     # per class

writes ``<out>/train/<class>/*.jpg`` and ``<out>/val/<class>/*.jpg``: pretrain on ``<out>/train`` with
``--dataset images`` (the labels are never read), evaluate with ``--dataset folder --data-dir <out>``.
Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter

CLASSES = ("circle", "square", "triangle", "star", "cross")


def _colour(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return tuple(rng.randint(lo, hi) for _ in range(3))


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(angle + k * math.pi / 2 + math.pi / 4), math.sin(angle + k * math.pi / 2 + math.pi / 4))
               for k in range(4)]
    elif kind == "triangle":
        pts = [(math.cos(angle + k * 2 * math.pi / 3), math.sin(angle + k * 2 * math.pi / 3)) for k in range(3)]
    elif kind == "star":
        pts = [((1.0 if k % 2 == 0 else 0.45) * math.cos(angle + k * math.pi / 5),
                (1.0 if k % 2 == 0 else 0.45) * math.sin(angle + k * math.pi / 5)) for k in range(10)]
    elif kind == "cross":
        a, b = 1.0, 0.33
        base = [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b), (b, a), (-b, a), (-b, b), (-a, b), (-a, -b),
                (-b, -b)]
        c, s = math.cos(angle), math.sin(angle)
        pts = [(x * c - y * s, x * s + y * c) for x, y in base]
    else:
        raise ValueError(kind)
    return [(cx + r * x, cy + r * y) for x, y in pts]


def scene(kind: str, rng: random.Random) -> Image.Image:
    """One scene with an object of shape ``kind``."""
    w, h = rng.randint(300, 600), rng.randint(300, 600)
    if not 0.75 <= w / h <= 4 / 3:
        h = int(w / rng.uniform(0.75, 4 / 3))
    # background: a gradient between two colours, soft blobs, clutter
    c0, c1 = _colour(rng), _colour(rng)
    grad = Image.linear_gradient("L").resize((w, h)).rotate(rng.uniform(0, 360), expand=False, fillcolor=128)
    img = Image.composite(Image.new("RGB", (w, h), c0), Image.new("RGB", (w, h), c1), grad)
    blobs = Image.new("RGB", (w, h))
    mask = Image.new("L", (w, h), 0)
    bd, md = ImageDraw.Draw(blobs), ImageDraw.Draw(mask)
    for _ in range(rng.randint(3, 8)):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * min(w, h)
        bd.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r], fill=_colour(rng))
        md.ellipse([x - r, y - r * rng.uniform(0.5, 1.5), x + r, y + r], fill=rng.randint(40, 120))
    img = Image.composite(blobs, img, mask.filter(ImageFilter.GaussianBlur(min(w, h) / 20)))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(4, 14)):  # clutter: lines and small outlines, never a filled shape
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.line([x, y, x + rng.uniform(-w / 3, w / 3), y + rng.uniform(-h / 3, h / 3)], fill=_colour(rng),
                      width=rng.randint(1, 4))
        else:
            r = rng.uniform(0.02, 0.08) * min(w, h)
            draw.arc([x - r, y - r, x + r, y + r], rng.uniform(0, 180), rng.uniform(180, 360), fill=_colour(rng),
                     width=rng.randint(1, 3))
    # the object, with a soft shadow
    r = rng.uniform(0.10, 0.275) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    angle = rng.uniform(0, 2 * math.pi)
    shadow = Image.new("L", (w, h), 0)
    sd = ImageDraw.Draw(shadow)
    dx, dy = rng.uniform(-0.15, 0.15) * r, rng.uniform(0.05, 0.2) * r
    colour = _colour(rng)
    if kind == "circle":
        sd.ellipse([cx - r + dx, cy - r + dy, cx + r + dx, cy + r + dy], fill=110)
    else:
        sd.polygon(_polygon(kind, cx + dx, cy + dy, r, angle), fill=110)
    img = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), img, shadow.filter(ImageFilter.GaussianBlur(r / 8)))
    draw = ImageDraw.Draw(img)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=colour)
    # camera: texture noise, a little blur
    noise = Image.effect_noise((w, h), rng.uniform(10, 40)).convert("RGB")
    img = Image.blend(img, noise, rng.uniform(0.03, 0.12))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def write_set(out: str | Path, per_class_train: int, per_class_val: int, seed: int = 0) -> Path:
    out = Path(out)
    rng = random.Random(seed)
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for kind in CLASSES:
            folder = out / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                scene(kind, rng).save(folder / f"{kind}_{i:04d}.jpg", quality=rng.randint(80, 95))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=100, help="training images per class")
    p.add_argument("--val", type=int, default=40, help="evaluation images per class")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = write_set(args.out, args.train, args.val, args.seed)
    print(f"wrote {len(CLASSES) * (args.train + args.val)} scenes to {out}")


if __name__ == "__main__":
    main()
