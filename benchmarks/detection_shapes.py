"""Synthetic detection data in the published layouts: coloured rectangles on noise, one colour per class, as a
Pascal VOC tree and as a COCO annotation file. The CPU detection example (`detection_cpu.sh`) and the tests
write their data with it.

    python benchmarks/detection_shapes.py --out data/shapes-voc --layout voc --train 400 --test 100
    barlowtwins detect --random-init --backbone resnet18 --dataset voc --data-dir data/shapes-voc ...
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

SHAPE_CLASSES = ("aeroplane", "bicycle", "bird")  # VOC names (the reader knows only these); red, green, blue
_COLOURS = ((220, 40, 40), (40, 200, 40), (40, 60, 230))


def _scene(rng, size: int, max_objects: int):
    """(H, W, 3) uint8 image and its objects [(class index, x0, y0, x1, y1)] in 0-based pixel coordinates."""
    h = size
    w = size + int(rng.integers(0, size // 4 + 1))
    img = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
    objects = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        c = int(rng.integers(0, len(SHAPE_CLASSES)))
        bw, bh = (int(rng.integers(size // 5, size // 2)) for _ in range(2))
        x0, y0 = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
        img[y0: y0 + bh, x0: x0 + bw] = _COLOURS[c]
        objects.append((c, x0, y0, x0 + bw, y0 + bh))
    return img, objects


def make_voc_shapes(root: Path, n_trainval: int = 8, n_test: int = 4, size: int = 64, max_objects: int = 2,
                    seed: int = 0, year: str = "2007", difficult_every: int = 5) -> Path:
    """``root/VOCdevkit/VOC<year>/{Annotations,JPEGImages,ImageSets/Main/{trainval,test}.txt}``; returns root.

    Every ``difficult_every``-th object is marked difficult. XML boxes are 1-based and inclusive, as in VOC.
    """
    rng = np.random.default_rng(seed)
    base = root / "VOCdevkit" / f"VOC{year}"
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    count = 0
    for split, n in (("trainval", n_trainval), ("test", n_test)):
        ids = []
        for i in range(n):
            image_id = f"{year}_{split}_{i:05d}"
            img, objects = _scene(rng, size, max_objects)
            Image.fromarray(img).save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
            xml = [f"<annotation><filename>{image_id}.jpg</filename><size><width>{img.shape[1]}</width>"
                   f"<height>{img.shape[0]}</height><depth>3</depth></size>"]
            for c, x0, y0, x1, y1 in objects:
                count += 1
                difficult = int(difficult_every > 0 and count % difficult_every == 0)
                xml.append(f"<object><name>{SHAPE_CLASSES[c]}</name><pose>Unspecified</pose><truncated>0</truncated>"
                           f"<difficult>{difficult}</difficult><bndbox><xmin>{x0 + 1}</xmin><ymin>{y0 + 1}</ymin>"
                           f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")
            xml.append("</annotation>")
            (base / "Annotations" / f"{image_id}.xml").write_text("".join(xml))
            ids.append(image_id)
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def make_coco_shapes(root: Path, n_train: int = 8, n_val: int = 4, size: int = 64, max_objects: int = 2,
                     seed: int = 1) -> Path:
    """``root/annotations/instances_{train,val}2017.json`` + ``root/{train,val}2017/*.jpg``; returns root.

    Category ids are 5, 9, 2 (not 1..K, and not sorted) to exercise the id mapping; each object carries a
    polygon (odd objects) or an uncompressed RLE (even objects) covering its rectangle; one crowd box per file.
    """
    rng = np.random.default_rng(seed)
    cat_ids = (5, 9, 2)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, n in (("train2017", n_train), ("val2017", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in range(n):
            img, objects = _scene(rng, size, max_objects)
            name = f"{i:012d}.jpg"
            Image.fromarray(img).save(root / split / name, quality=95)
            h, w = img.shape[:2]
            images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
            for c, x0, y0, x1, y1 in objects:
                if len(anns) % 2:
                    seg = [[x0, y0, x1, y0, x1, y1, x0, y1]]
                else:  # column-major run lengths of the rectangle mask
                    m = np.zeros((h, w), dtype=np.uint8)
                    m[y0:y1, x0:x1] = 1
                    flat = m.flatten(order="F")
                    runs, cur, length = [], 0, 0
                    for v in flat:
                        if v != cur:
                            runs.append(length)
                            cur, length = v, 0
                        length += 1
                    runs.append(length)
                    seg = {"size": [h, w], "counts": runs}
                anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": cat_ids[c],
                             "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0,
                             "segmentation": seg})
        anns.append({"id": len(anns) + 1, "image_id": 100, "category_id": cat_ids[0], "bbox": [0, 0, 10, 10],
                     "area": 100, "iscrowd": 1, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]})
        cats = [{"id": cid, "name": SHAPE_CLASSES[k]} for k, cid in enumerate(cat_ids)]
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root


def coco_from_targets(gts: Sequence[dict], num_classes: int, image_sizes: Sequence[tuple[int, int]] | None = None):
    """An in-memory pycocotools ``COCO`` of ground truth given as tensors (image ids 0..N-1, classes 1..K): the
    reference side of the tests that compare our AP with pycocotools'."""
    from pycocotools.coco import COCO  # optional: only the tests that have it call this

    images, anns = [], []
    for i, g in enumerate(gts):
        h, w = image_sizes[i] if image_sizes else (10_000, 10_000)
        images.append({"id": i, "height": int(h), "width": int(w)})
        for b, c, ig in zip(g["boxes"].double().tolist(), g["labels"].tolist(), g["ignore"].tolist()):
            x1, y1, x2, y2 = b
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "iscrowd": int(bool(ig)),
                         "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c} for c in range(1, num_classes + 1)]}
    coco.createIndex()
    return coco


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write (VOCdevkit/VOC2007 or COCO-style inside)")
    p.add_argument("--layout", choices=("voc", "coco"), default="voc")
    p.add_argument("--train", type=int, default=400, help="trainval (VOC) or train (COCO) images")
    p.add_argument("--test", type=int, default=100, help="test (VOC) or val (COCO) images")
    p.add_argument("--size", type=int, default=64, help="image height in pixels")
    p.add_argument("--max-objects", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    make = make_voc_shapes if args.layout == "voc" else make_coco_shapes
    make(Path(args.out), args.train, args.test, size=args.size, max_objects=args.max_objects, seed=args.seed)
    print(f"wrote {args.train} + {args.test} images in the {args.layout.upper()} layout to {args.out}")


if __name__ == "__main__":
    main()
