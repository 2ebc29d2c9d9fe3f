"""A photo-like image set for the "your own photos" benchmark: scenes with one object class each.

Three kinds of set, all scenes rather than noise: a two-colour gradient background with soft blobs, texture and
clutter (lines and small outlines), sizes 300-600 px, aspect ratios 3:4 to 4:3, JPEG quality 80-95, a soft
shadow under the objects, sensor noise and a little blur.

* ``subjects`` (the default): photos of one subject, as people take them: a single object of 35-75% of the
  short side, off centre by at most a sixth of the frame. Five object classes drawn as things in photos are, by
  their parts: a beach ball (segments of two colours), a flower (petals round a centre, a stem), a house (walls,
  roof, door, windows), a tree (trunk and crown) and a fish (body, tail, fin, eye); upright with a little tilt;
  colours vary within each class and overlap between classes (a green fish, a yellow flower and a yellow house),
  so colour alone does not name the class.
* ``objects``: the same classes as small scattered things rather than subjects: one to three instances, 25-60%
  of the short side (less each when there are several), anywhere in the frame. Harder: a supervised ResNet-18
  (width 16, 48 px) trained from scratch on its 1000 labelled images reaches 57% in 800 steps
  (benchmarks/RESULTS.md).
* ``shapes``: one filled geometric shape (circle, square, triangle, star, cross) of uniformly random colour,
  size (20-55% of the short side), place and rotation: only the silhouette tells the classes apart. Harder
  than photos are: a supervised ResNet-18 trained from scratch on 500 such images does not beat chance in a
  few CPU-minutes (benchmarks/RESULTS.md).

    python benchmarks/photo_scenes.py --out data/scenes --train 200 --val 60     # per class

writes ``<out>/train/<class>/*.jpg`` and ``<out>/val/<class>/*.jpg``: pretrain on ``<out>/train`` with
``--dataset images`` (the labels are never read), evaluate with ``--dataset folder --data-dir <out>``.
Deterministic for a given ``--seed``.
"""

from __future__ import annotations

import argparse
import colorsys
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw, ImageFilter


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


def background(rng: random.Random) -> Image.Image:
    """A gradient between two colours with soft blobs and clutter (lines, small outlines; nothing filled)."""
    w, h = rng.randint(300, 600), rng.randint(300, 600)
    if not 0.75 <= w / h <= 4 / 3:
        h = int(w / rng.uniform(0.75, 4 / 3))
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
    for _ in range(rng.randint(4, 14)):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        if rng.random() < 0.5:
            draw.line([x, y, x + rng.uniform(-w / 3, w / 3), y + rng.uniform(-h / 3, h / 3)], fill=_colour(rng),
                      width=rng.randint(1, 4))
        else:
            r = rng.uniform(0.02, 0.08) * min(w, h)
            draw.arc([x - r, y - r, x + r, y + r], rng.uniform(0, 180), rng.uniform(180, 360), fill=_colour(rng),
                     width=rng.randint(1, 3))
    return img


def _hsv(rng: random.Random, hue: tuple[float, float], sat=(0.5, 1.0), val=(0.5, 1.0)) -> tuple[int, int, int]:
    """A colour with hue in degrees (ranges may wrap past 360), saturation and value drawn in the given ranges."""
    r, g, b = colorsys.hsv_to_rgb((rng.uniform(*hue) % 360) / 360, rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def _ball(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    a, b = _hsv(rng, (0, 360)), _hsv(rng, (0, 360), sat=(0.0, 0.3), val=(0.8, 1.0))
    n, turn = rng.choice((6, 8)), rng.uniform(0, 360)
    for k in range(n):
        d.pieslice([cx - r, cy - r, cx + r, cy + r], turn + k * 360 / n, turn + (k + 1) * 360 / n,
                   fill=a if k % 2 else b)
    d.ellipse([cx - 0.2 * r, cy - 0.2 * r, cx + 0.2 * r, cy + 0.2 * r], fill=a)
    d.ellipse([cx - 0.55 * r, cy - 0.6 * r, cx - 0.3 * r, cy - 0.4 * r], fill=(255, 255, 255))


def _flower(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    d.line([cx, cy, cx + rng.uniform(-0.2, 0.2) * r, cy + 1.6 * r], fill=_hsv(rng, (90, 140), val=(0.3, 0.7)),
           width=max(2, int(0.08 * r)))
    petal, n, turn = _hsv(rng, (-60, 70)), rng.randint(5, 8), rng.uniform(0, 2 * math.pi)
    for k in range(n):
        t = turn + 2 * math.pi * k / n
        px, py, pr = cx + 0.55 * r * math.cos(t), cy + 0.55 * r * math.sin(t), 0.42 * r
        d.ellipse([px - pr, py - pr, px + pr, py + pr], fill=petal, outline=_hsv(rng, (-60, 70), val=(0.3, 0.6)))
    c = 0.3 * r
    d.ellipse([cx - c, cy - c, cx + c, cy + c], fill=_hsv(rng, (25, 60), val=(0.4, 1.0)))


def _house(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    w, h = r * rng.uniform(0.8, 1.1), r * rng.uniform(0.6, 0.8)
    top = cy - h * 0.3
    d.rectangle([cx - w, top, cx + w, top + 2 * h * 0.75], fill=_hsv(rng, (0, 360), sat=(0.1, 0.7)))
    d.polygon([(cx - 1.15 * w, top), (cx + 1.15 * w, top), (cx, top - h * rng.uniform(0.7, 1.0))],
              fill=_hsv(rng, (-20, 40), sat=(0.4, 0.9), val=(0.3, 0.8)))
    d.rectangle([cx - 0.18 * w, top + 0.55 * h, cx + 0.18 * w, top + 1.5 * h], fill=_hsv(rng, (0, 360), val=(0.1, 0.5)))
    glass = _hsv(rng, (40, 220), sat=(0.2, 0.6), val=(0.8, 1.0))
    for side in (-1, 1):
        x = cx + side * 0.6 * w
        d.rectangle([x - 0.2 * w, top + 0.3 * h, x + 0.2 * w, top + 0.7 * h], fill=glass, outline=(40, 40, 40))


def _tree(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    t = 0.13 * r
    d.rectangle([cx - t, cy, cx + t, cy + 1.3 * r], fill=_hsv(rng, (15, 40), sat=(0.4, 0.8), val=(0.2, 0.5)))
    leaves = (20, 50) if rng.random() < 0.25 else (70, 150)  # a quarter in autumn colours
    for _ in range(rng.randint(4, 7)):
        x, y, s = cx + rng.uniform(-0.5, 0.5) * r, cy - rng.uniform(0.1, 0.8) * r, rng.uniform(0.35, 0.6) * r
        d.ellipse([x - s, y - s, x + s, y + s], fill=_hsv(rng, leaves, val=(0.3, 0.9)))


def _fish(d: ImageDraw.ImageDraw, cx: float, cy: float, r: float, rng: random.Random) -> None:
    face = rng.choice((-1, 1))  # facing left or right
    body = _hsv(rng, (0, 360))
    bh = r * rng.uniform(0.45, 0.65)
    d.polygon([(cx - face * 0.7 * r, cy), (cx - face * 1.25 * r, cy - 0.6 * bh), (cx - face * 1.25 * r, cy + 0.6 * bh)],
              fill=_hsv(rng, (0, 360)))  # tail
    d.polygon([(cx - 0.2 * r, cy - 0.8 * bh), (cx + face * 0.25 * r, cy - 0.8 * bh),
               (cx - face * 0.2 * r, cy - 1.3 * bh)],
              fill=body)  # dorsal fin
    d.ellipse([cx - 0.85 * r, cy - bh, cx + 0.85 * r, cy + bh], fill=body, outline=_hsv(rng, (0, 360), val=(0.2, 0.5)))
    ex, e = cx + face * 0.5 * r, 0.12 * r
    d.ellipse([ex - e, cy - 0.3 * bh - e, ex + e, cy - 0.3 * bh + e], fill=(250, 250, 250))
    d.ellipse([ex - e / 2, cy - 0.3 * bh - e / 2, ex + e / 2, cy - 0.3 * bh + e / 2], fill=(10, 10, 10))


OBJECTS = {"ball": _ball, "flower": _flower, "house": _house, "tree": _tree, "fish": _fish}
SHAPES = ("circle", "square", "triangle", "star", "cross")
KINDS = {"subjects": tuple(OBJECTS), "objects": tuple(OBJECTS), "shapes": SHAPES}


def _finish(img: Image.Image, layer: Image.Image, rng: random.Random, r: float) -> Image.Image:
    """Paste an RGBA object layer with a soft shadow, then the camera: sensor noise and a little blur."""
    w, h = img.size
    alpha = layer.getchannel("A")
    dx, dy = int(rng.uniform(-0.15, 0.15) * r), int(rng.uniform(0.05, 0.2) * r)
    shadow = Image.new("L", (w, h), 0)
    shadow.paste(alpha.point(lambda a: 110 if a else 0), (dx, dy))
    img = Image.composite(Image.new("RGB", (w, h), (0, 0, 0)), img, shadow.filter(ImageFilter.GaussianBlur(r / 8)))
    img.paste(layer, (0, 0), layer)
    # sensor noise of standard deviation sigma, drawn from rng (Image.effect_noise uses C's rand(), so a set
    # would differ from run to run): uniform bytes (std 74) scaled about 128
    sigma = rng.uniform(10, 40)
    noise = Image.frombytes("L", (w, h), rng.randbytes(w * h)).point(lambda v: round(128 + (v - 128) * sigma / 74))
    noise = noise.convert("RGB")
    img = Image.blend(img, noise, rng.uniform(0.03, 0.12))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))


def object_scene(kind: str, rng: random.Random, subject: bool = False) -> Image.Image:
    """A scene with one to three objects of class ``kind`` (`OBJECTS`), upright with a little tilt; with
    ``subject``, a photo of one subject: a single object of 35-75% of the short side near the centre."""
    img = background(rng)
    w, h = img.size
    count = 1 if subject else rng.choices((1, 2, 3), weights=(6, 3, 1))[0]
    size = rng.uniform(0.35, 0.75) if subject else rng.uniform(0.25, 0.6)
    r = 0.5 * size * min(w, h) / math.sqrt(count)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    for _ in range(count):
        one = Image.new("RGBA", (w, h), (0, 0, 0, 0))
        cx, cy = rng.uniform(1.3 * r, w - 1.3 * r), rng.uniform(1.3 * r, h - 1.6 * r)
        if subject:  # framed as people frame a subject: off centre by at most a sixth of the frame
            cx = min(max(1.3 * r, w / 2 + rng.uniform(-w / 6, w / 6)), w - 1.3 * r)
            cy = min(max(1.3 * r, h / 2 + rng.uniform(-h / 6, h / 6)), h - 1.6 * r)
        OBJECTS[kind](ImageDraw.Draw(one), cx, cy, r, rng)
        one = one.rotate(rng.uniform(-15, 15), resample=Image.BICUBIC, center=(cx, cy))
        layer.alpha_composite(one)
    return _finish(img, layer, rng, r)


def shape_scene(kind: str, rng: random.Random) -> Image.Image:
    """A scene with one filled shape of class ``kind`` (`SHAPES`), random colour, size, place and rotation."""
    img = background(rng)
    w, h = img.size
    r = rng.uniform(0.10, 0.275) * min(w, h)
    cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
    angle = rng.uniform(0, 2 * math.pi)
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    colour = _colour(rng)
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r, angle), fill=colour)
    return _finish(img, layer, rng, r)


def scene(kind: str, rng: random.Random, subject: bool = False) -> Image.Image:
    """One scene of class ``kind``: an object class (one subject, or one to three objects) or a shape."""
    return object_scene(kind, rng, subject) if kind in OBJECTS else shape_scene(kind, rng)


def write_set(out: str | Path, per_class_train: int, per_class_val: int, seed: int = 0,
              kind: str = "objects") -> Path:
    out = Path(out)
    rng = random.Random(seed)
    for split, n in (("train", per_class_train), ("val", per_class_val)):
        for cls in KINDS[kind]:
            folder = out / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                scene(cls, rng, kind == "subjects").save(folder / f"{cls}_{i:04d}.jpg", quality=rng.randint(80, 95))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--train", type=int, default=100, help="training images per class")
    p.add_argument("--val", type=int, default=40, help="evaluation images per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", choices=tuple(KINDS), default="subjects")
    args = p.parse_args()
    out = write_set(args.out, args.train, args.val, args.seed, args.kind)
    print(f"wrote {len(KINDS[args.kind]) * (args.train + args.val)} {args.kind} scenes to {out}")


if __name__ == "__main__":
    main()
