"""Detection data in the layouts it is published in: Pascal VOC (XML per image) and COCO (one JSON file).

* VOC: ``<root>/VOCdevkit/VOC<year>/`` (or ``<root>/VOC<year>/``, or ``<root>`` itself) with ``Annotations/<id>.xml``,
  ``JPEGImages/<id>.jpg`` and ``ImageSets/Main/<split>.txt``. Sets are named ``<year>-<split>``; the standard
  transfer protocol trains on ``2007-trainval`` + ``2012-trainval`` and tests on ``2007-test``. Boxes are read
  the way Detectron2 reads them (``xmin - 1``, ``ymin - 1``: VOC counts pixels from 1); *difficult* objects are
  kept for training and ignored by the evaluation (neither hit nor miss), as the VOC protocol says.
* COCO: an annotation JSON (``images``, ``annotations`` with ``bbox`` x, y, w, h and ``segmentation`` polygons or
  RLE, ``categories``) and an image folder. Crowd boxes are left out of training and ignored by the evaluation.
  Masks (instance segmentation) are decoded with pycocotools.

Every data set yields ``(image, target)``: a uint8 (3, H, W) tensor and ``{"boxes": (N, 4) float32 xyxy,
"labels": (N,) int64 in 1..K, "ignore": (N,) bool[, "masks": (N, H, W) uint8]}``. Training adds a random
horizontal flip (the only augmentation of the standard schedule besides the detector's own multi-scale resize).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from barlowtwins.data.images import read_image
from barlowtwins.data.transfer import VOC_CLASSES
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.detection.ap import pycocotools_available

DEFAULT_VOC_TRAIN = ("2007-trainval", "2012-trainval")
DEFAULT_VOC_TEST = ("2007-test",)


@dataclass
class Record:
    """One image: its file, size and objects (boxes xyxy in pixels, labels 1..K, ignore flags)."""

    file: str
    height: int
    width: int
    boxes: list[list[float]]
    labels: list[int]
    ignore: list[bool]
    image_id: int | str = 0  # the id the annotation file gives (COCO image id / VOC file stem)
    segmentations: list = field(default_factory=list)  # COCO polygons / RLE, one per box (instance segmentation)


class DetectionDataset(torch.utils.data.Dataset):
    """Images and their objects, read from a list of `Record`.

    Args:
        records: the images.
        classes: class names; label ``k`` is ``classes[k - 1]`` (0 is the background).
        name: for messages and result files.
        train: add a random horizontal flip (seeded per sample by ``seed`` and ``epoch``).
        masks: decode ``segmentations`` into per-object masks (needs pycocotools).
        category_ids: COCO category id of each class (results are written with them), else None.
    """

    def __init__(self, records: list[Record], classes: list[str], name: str, *, train: bool = False,
                 masks: bool = False, category_ids: list[int] | None = None, coco_file: str | None = None):
        self.records = records
        self.classes = list(classes)
        self.name = name
        self.train = train
        self.masks = masks
        self.category_ids = category_ids
        self.coco_file = coco_file
        self.epoch = 0
        self.seed = 0

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.records)

    def target(self, i: int) -> dict:
        """Ground truth of image ``i`` as tensors (no image read, no flip): what the evaluation compares with."""
        r = self.records[i]
        return {"boxes": torch.tensor(r.boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(r.labels, dtype=torch.int64),
                "ignore": torch.tensor(r.ignore, dtype=torch.bool)}

    def __getitem__(self, i: int):
        r = self.records[i]
        # The package's one image reader: its format allow-list, one-line DataError naming the file.
        image = torch.from_numpy(np.asarray(read_image(r.file)).copy()).permute(2, 0, 1)  # (3, H, W) uint8
        target = self.target(i)
        if self.masks:
            target["masks"] = _decode_masks(r.segmentations, image.shape[1], image.shape[2])
        if self.train:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 8_191 + i)
            if bool(torch.rand((), generator=g) < 0.5):
                image, target = hflip(image, target)
        target["index"] = i
        return image, target


def hflip(image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    """Mirror an image (C, H, W) and its boxes (x -> W - x) and masks."""
    w = image.shape[-1]
    out = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = w - target["boxes"][:, [2, 0]]
    out["boxes"] = boxes
    if "masks" in target:
        out["masks"] = target["masks"].flip(-1)
    return image.flip(-1), out


def collate(batch):
    """Detection batches are lists (images differ in size): ([image, ...], [target, ...])."""
    return [b[0] for b in batch], [b[1] for b in batch]


def _decode_masks(segmentations: list, h: int, w: int) -> torch.Tensor:
    from pycocotools import mask as mask_utils

    out = torch.zeros(len(segmentations), h, w, dtype=torch.uint8)
    for k, seg in enumerate(segmentations):
        if isinstance(seg, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, h, w)
        else:
            rle = seg
        out[k] = torch.from_numpy(mask_utils.decode(rle))
    return out


# --------------------------------------------------------------------------------------------------------
# Pascal VOC
# --------------------------------------------------------------------------------------------------------

def _voc_year_dir(root: Path, year: str) -> Path:
    for c in (root / "VOCdevkit" / f"VOC{year}", root / f"VOC{year}", root):
        if c.name == f"VOC{year}" and (c / "Annotations").is_dir() and (c / "ImageSets" / "Main").is_dir():
            return c
    raise DataError(f"no VOC{year} under {root} (expected VOCdevkit/VOC{year}/ with Annotations/, JPEGImages/ and "
                    "ImageSets/Main/); check --data-dir, or choose other sets with --train-sets/--test-sets")


def parse_voc_sets(text: str | list[str] | tuple) -> list[tuple[str, str]]:
    """``"2007-trainval,2012-trainval"`` -> ``[("2007", "trainval"), ("2012", "trainval")]``."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        year, _, split = item.strip().partition("-")
        if not (year.isdigit() and len(year) == 4 and split):
            raise ConfigError(f"VOC set '{item}' is not <year>-<split>; write e.g. 2007-trainval,2012-trainval")
        out.append((year, split))
    if not out:
        raise ConfigError("name at least one VOC set, e.g. 2007-test")
    return out


def _read_voc_xml(path: Path, classes: dict[str, int]) -> tuple[int, int, list, list, list]:
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"VOC annotation {path} is not readable XML ({e})") from None
    size = root.find("size")
    h = int(float(size.findtext("height", "0"))) if size is not None else 0
    w = int(float(size.findtext("width", "0"))) if size is not None else 0
    boxes, labels, ignore = [], [], []
    for obj in root.findall("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in classes:
            raise DataError(f"{path}: object class '{name}' is not one of the 20 VOC classes")
        bb = obj.find("bndbox")
        corners = [bb.findtext(k) for k in ("xmin", "ymin", "xmax", "ymax")] if bb is not None else []
        try:  # no bndbox, or a corner missing: too few values to unpack
            xmin, ymin, xmax, ymax = (float(v) for v in corners if v is not None)
        except (TypeError, ValueError, AttributeError):
            raise DataError(f"{path}: an object of class '{name}' has no complete bndbox") from None
        # VOC counts pixels from 1 and includes xmax: [xmin - 1, xmax) is the box in continuous 0-based
        # coordinates (what Detectron2 does, and what makes its +1-pixel VOC IoU the plain IoU here).
        boxes.append([xmin - 1, ymin - 1, xmax, ymax])
        labels.append(classes[name])
        ignore.append(obj.findtext("difficult", "0").strip() == "1")
    return h, w, boxes, labels, ignore


def voc_detection(root: str | Path, sets=DEFAULT_VOC_TEST, *, train: bool = False) -> DetectionDataset:
    """VOC detection over one or more ``(year, split)`` sets (``"2007-trainval,2012-trainval"`` works too)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"VOC data folder {root} does not exist; check --data-dir")
    classes = {c: k + 1 for k, c in enumerate(VOC_CLASSES)}
    records: list[Record] = []
    pairs = parse_voc_sets(sets)
    for year, split in pairs:
        base = _voc_year_dir(root, year)
        ids_file = base / "ImageSets" / "Main" / f"{split}.txt"
        if not ids_file.is_file():
            raise DataError(f"VOC split file {ids_file} not found")
        ids = [ln.split()[0] for ln in ids_file.read_text().splitlines() if ln.strip()]
        if not ids:
            raise DataError(f"VOC split file {ids_file} lists no images")
        for image_id in ids:
            xml = base / "Annotations" / f"{image_id}.xml"
            if not xml.is_file():
                raise DataError(f"VOC annotation {xml} not found (listed in {ids_file})")
            h, w, boxes, labels, ignore = _read_voc_xml(xml, classes)
            image = base / "JPEGImages" / f"{image_id}.jpg"
            if not image.is_file():
                raise DataError(f"VOC image {image} not found (listed in {ids_file})")
            records.append(Record(str(image), h, w, boxes, labels, ignore, f"{year}/{image_id}"))
    if train:
        records = [r for r in records if r.boxes]  # images without objects teach nothing (Detectron2 drops them)
        if not records:
            raise DataError(f"VOC sets {sets} hold no objects to train on")
    name = "voc" + "+".join(f"{y}-{s}" for y, s in pairs)
    return DetectionDataset(records, list(VOC_CLASSES), name, train=train)


# --------------------------------------------------------------------------------------------------------
# COCO
# --------------------------------------------------------------------------------------------------------

def coco_detection(ann_file: str | Path, image_dir: str | Path, *, train: bool = False, masks: bool = False,
                   categories: list[dict] | None = None) -> DetectionDataset:
    """COCO-layout detection (and instance segmentation with ``masks=True``).

    ``categories``: the category list that fixes the label order (the training file's, so that a test file
    listing them in another order still agrees); default: this file's, sorted by id.
    """
    ann_file, image_dir = Path(ann_file).expanduser(), Path(image_dir).expanduser()
    if not ann_file.is_file():
        raise DataError(f"COCO annotation file {ann_file} not found; check --data-dir / --train-ann / --test-ann")
    if not image_dir.is_dir():
        raise DataError(f"COCO image folder {image_dir} not found; check --data-dir / --train-images / --test-images")
    try:
        data = json.loads(ann_file.read_text())
        images = {im["id"]: im for im in data["images"]}
        anns = data.get("annotations", [])
        cats = sorted(categories if categories is not None else data["categories"], key=lambda c: c["id"])
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataError(f"{ann_file} is not a COCO annotation file ({type(e).__name__}: {e})") from None
    if not images:
        raise DataError(f"COCO annotation file {ann_file} lists no images")
    if not cats:
        raise DataError(f"COCO annotation file {ann_file} lists no categories")
    label_of = {c["id"]: k + 1 for k, c in enumerate(cats)}
    per_image: dict = {i: [] for i in images}
    for a in anns:
        if a.get("image_id") not in per_image or a.get("category_id") not in label_of:
            raise DataError(f"{ann_file}: annotation {a.get('id')} names an unknown image or category")
        per_image[a["image_id"]].append(a)
    if masks:

        if not pycocotools_available():
            raise ConfigError("instance segmentation needs pycocotools: pip install 'barlowtwins[detection]'")
    records = []
    for img_id in sorted(images):
        im = images[img_id]
        boxes, labels, ignore, segs = [], [], [], []
        for a in per_image[img_id]:
            x, y, w, h = (float(v) for v in a["bbox"])
            crowd = bool(a.get("iscrowd", 0))
            if w < 1 or h < 1 or (train and crowd):
                continue  # degenerate boxes and (in training) crowd regions are skipped, as Detectron2 does
            if masks and not a.get("segmentation"):
                continue
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[a["category_id"]])
            ignore.append(crowd)
            if masks:
                segs.append(a["segmentation"])
        records.append(Record(str(image_dir / im["file_name"]), int(im.get("height", 0)), int(im.get("width", 0)),
                              boxes, labels, ignore, img_id, segs))
    if train:
        records = [r for r in records if r.boxes]
        if not records:
            raise DataError(f"COCO annotation file {ann_file} holds no usable objects to train on")
    missing = [r.file for r in records[:50] if not Path(r.file).is_file()]
    if missing:
        raise DataError(f"COCO image {missing[0]} not found (listed in {ann_file}); check the image folder")
    return DetectionDataset(records, [str(c.get("name", c["id"])) for c in cats], f"coco-{ann_file.stem}",
                            train=train, masks=masks, category_ids=[c["id"] for c in cats], coco_file=str(ann_file))


def coco_layout(data_dir: str | Path, train_ann=None, train_images=None, test_ann=None, test_images=None):
    """The files of a COCO-layout folder: ``annotations/instances_{train,val}2017.json`` with ``train2017/`` and
    ``val2017/`` (explicit paths win). Returns ``(train_ann, train_images, test_ann, test_images)``."""
    root = Path(data_dir).expanduser() if data_dir else None
    if root is None and not (train_ann and train_images and test_ann and test_images):
        raise ConfigError("give --data-dir (a COCO folder) or all of --train-ann/--train-images/--test-ann/"
                          "--test-images")

    def pick(explicit, default):
        return Path(explicit).expanduser() if explicit else root / default

    return (pick(train_ann, "annotations/instances_train2017.json"), pick(train_images, "train2017"),
            pick(test_ann, "annotations/instances_val2017.json"), pick(test_images, "val2017"))
