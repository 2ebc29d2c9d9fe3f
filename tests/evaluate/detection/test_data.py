"""Detection data readers (VOC XML, COCO JSON), the flip of boxes and masks, the class names."""

from __future__ import annotations

import json

import pytest
import torch
from detection_shapes import SHAPE_CLASSES, make_coco_shapes, make_voc_shapes

from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.detection.data import coco_detection, hflip, parse_voc_sets, voc_detection


def test_voc_reader_boxes_difficult_and_sets(tmp_path):
    root = make_voc_shapes(tmp_path / "voc", n_trainval=4, n_test=3, year="2007")
    make_voc_shapes(tmp_path / "voc", n_trainval=3, n_test=0, year="2012", seed=5)
    train = voc_detection(root, "2007-trainval,2012-trainval", train=True)
    test = voc_detection(root, "2007-test")
    assert len(train) == 7 and len(test) == 3 and train.num_classes == 20
    # The XML says xmin/ymin 1-based inclusive: the reader gives [xmin - 1, xmax).
    import xml.etree.ElementTree as ET

    rec = test.records[0]
    xml = ET.parse(root / "VOCdevkit/VOC2007/Annotations" / f"{rec.image_id.split('/')[1]}.xml").getroot()
    bb = xml.find("object/bndbox")
    assert rec.boxes[0] == [float(bb.findtext("xmin")) - 1, float(bb.findtext("ymin")) - 1,
                            float(bb.findtext("xmax")), float(bb.findtext("ymax"))]
    assert rec.labels[0] == 1 + ("aeroplane", "bicycle", "bird").index(xml.findtext("object/name"))
    all_ignore = [i for r in train.records + test.records for i in r.ignore]
    assert any(all_ignore) and not all(all_ignore)  # difficult objects are read, and kept
    image, target = test[0]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and target["boxes"].dtype == torch.float32
    assert parse_voc_sets("2007-trainval, 2012-trainval") == [("2007", "trainval"), ("2012", "trainval")]
    with pytest.raises(ConfigError):
        parse_voc_sets("trainval")
    with pytest.raises(DataError, match="no VOC2012"):
        voc_detection(make_voc_shapes(tmp_path / "only07", 1, 1), "2012-trainval")


def test_coco_reader_ids_crowd_and_masks(tmp_path):
    pytest.importorskip("pycocotools")
    root = make_coco_shapes(tmp_path / "coco", n_train=4, n_val=2)
    train = coco_detection(root / "annotations/instances_train2017.json", root / "train2017", train=True, masks=True)
    val = coco_detection(root / "annotations/instances_val2017.json", root / "val2017", masks=True)
    assert train.classes == ["bird", "aeroplane", "bicycle"]  # categories sorted by id (2, 5, 9)
    assert train.category_ids == [2, 5, 9]
    data = json.loads((root / "annotations/instances_val2017.json").read_text())
    assert not any(any(r.ignore) for r in train.records)  # crowd boxes are left out of training...
    assert any(val.records[0].ignore)  # ...and kept (ignored) for the evaluation
    image, target = train[0]
    masks, boxes = target["masks"], target["boxes"]
    assert masks.shape == (len(boxes), *image.shape[1:]) and masks.dtype == torch.uint8
    for m, b in zip(masks, boxes):  # polygon and RLE masks both fill exactly their rectangle
        x0, y0, x1, y1 = (int(v) for v in b)
        assert int(m.sum()) == (x1 - x0) * (y1 - y0) and bool(m[y0:y1, x0:x1].all())
    assert val.records[0].image_id == data["images"][0]["id"]


def test_hflip_mirrors_boxes_and_masks():
    image = torch.zeros(3, 4, 10, dtype=torch.uint8)
    image[:, 1:3, 2:5] = 255
    masks = (image[:1] > 0).to(torch.uint8)
    target = {"boxes": torch.tensor([[2.0, 1.0, 5.0, 3.0]]), "labels": torch.tensor([1]), "masks": masks}
    flipped, t = hflip(image, target)
    assert t["boxes"].tolist() == [[5.0, 1.0, 8.0, 3.0]]
    cols = torch.nonzero(flipped[0].sum(0)).flatten()
    assert (int(cols.min()), int(cols.max()) + 1) == (5, 8) and torch.equal(t["masks"][0], flipped[0] > 0)


def test_shape_classes_are_voc_names():
    from barlowtwins.data.transfer import VOC_CLASSES

    assert set(SHAPE_CLASSES) <= set(VOC_CLASSES)


def test_detection_images_are_read_with_the_format_allow_list(tmp_path, monkeypatch):
    """An EPS file named .jpg in a detection set: refused in one line, PIL's EPS plugin (Ghostscript) never used."""
    import subprocess
    from pathlib import Path

    from PIL import EpsImagePlugin

    root = make_voc_shapes(tmp_path / "voc", n_trainval=1, n_test=2)
    test = voc_detection(root, "2007-test")
    Path(test.records[0].file).write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n")
    used = []
    original = EpsImagePlugin.EpsImageFile._open
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: used.append("EPS") or original(self))
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: used.append("Popen") or 1 / 0)
    with pytest.raises(DataError, match=f"{test.records[0].file} .*remove or replace"):
        test[0]
    assert not used
    image, _ = test[1]  # the other images still read, as (3, H, W) uint8
    assert image.dtype == torch.uint8 and image.shape[0] == 3
