"""benchmarks/photo_scenes.py: the "your own photos" benchmark's scene sets are deterministic JPEG folders in the
layout the commands read, and each kind draws what its docstring says."""

from __future__ import annotations

import hashlib
import random

import pytest
from photo_scenes import KINDS, OBJECTS, background, scene, write_set
from PIL import Image, ImageChops


def _digest(folder) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.jpg"))}


@pytest.mark.parametrize("kind", tuple(KINDS))
def test_set_layout_and_determinism(tmp_path, kind):
    a = write_set(tmp_path / "a", 1, 1, seed=3, kind=kind)
    b = write_set(tmp_path / "b", 1, 1, seed=3, kind=kind)
    assert _digest(a) == _digest(b)  # the same seed writes the same bytes
    assert sorted(_digest(a)) == sorted(f"{split}/{c}/{c}_0000.jpg" for split in ("train", "val") for c in KINDS[kind])
    c = write_set(tmp_path / "c", 1, 1, seed=4, kind=kind)
    assert _digest(a) != _digest(c)
    for path in a.rglob("*.jpg"):
        with Image.open(path) as img:
            assert img.format == "JPEG" and img.mode == "RGB"
            w, h = img.size
            assert 300 <= w <= 600 and 0.74 <= w / h <= 4 / 3 + 0.01  # 300-600 px wide, 3:4 to 4:3


def _object_area(kind: str, subject: bool, seed: int) -> float:
    """The share of the frame that differs from the same scene's background: the drawn objects and shadow."""
    rng = random.Random(seed)
    state = rng.getstate()
    img = scene(kind, rng, subject)
    rng.setstate(state)
    back = background(rng)  # the scene's own background: the same first draws
    # the largest channel difference per pixel; noise and blur move a pixel by far less than 30
    diff = ImageChops.difference(img, back)
    most = ImageChops.lighter(ImageChops.lighter(*diff.split()[:2]), diff.split()[2])
    histogram = most.histogram()
    return sum(histogram[30:]) / sum(histogram)


def test_subjects_are_larger_than_scattered_objects():
    # a subject fills more of the frame than the scattered objects do, over the same classes and seeds
    seeds = range(8)
    subjects = [_object_area(k, True, s) for k in OBJECTS for s in seeds]
    scattered = [_object_area(k, False, s) for k in OBJECTS for s in seeds]
    assert sum(subjects) / len(subjects) > 1.5 * sum(scattered) / len(scattered)
    assert min(subjects) > 0.02  # every subject is visible
