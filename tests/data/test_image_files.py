"""`ImageFiles`: a list of image files with labels, read through the one image reader."""

import pytest
import torch
from conftest import make_image_folder

from barlowtwins.data.image_files import ImageFiles
from barlowtwins.errors import DataError


@pytest.fixture
def files(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=3, size=20, splits=("train",))
    return sorted(str(p) for p in root.rglob("*.*") if p.suffix in (".jpg", ".png"))


def test_items_are_rgb_images_and_their_labels(files):
    labels = [0, 0, 0, 1, 1, 1]
    ds = ImageFiles(files, labels, classes=["cat", "dog"], name="pets")
    assert len(ds) == 6 and ds.name == "pets" and ds.labels.dtype == torch.int64
    img, y = ds[4]
    assert img.mode == "RGB" and img.size[0] == 20 and y == 1 and isinstance(y, int)
    assert not ds.in_memory


def test_the_transform_is_applied_to_the_pil_image(files):
    ds = ImageFiles(files, [-1] * 6, transform=lambda im: im.size)
    assert ds[0] == ((20, 20), -1) and ds[1] == ((20, 21), -1)  # (width, height); make_image_folder: 20, 21, 22 high


def test_num_classes_from_the_class_names_else_the_labels(files):
    assert ImageFiles(files, [0] * 6, classes=["a", "b", "c"]).num_classes == 3
    assert ImageFiles(files, [0, 4, 1, 1, 2, 0]).num_classes == 5


def test_a_subset_keeps_the_files_labels_classes_and_transform_in_the_order_given(files):
    t = lambda im: "seen"  # noqa: E731
    ds = ImageFiles(files, [0, 0, 0, 1, 1, 1], classes=["cat", "dog"], name="pets", transform=t)
    sub = ds.subset(torch.tensor([5, 1]))
    assert sub.files == [files[5], files[1]] and sub.labels.tolist() == [1, 0]
    assert sub.classes == ["cat", "dog"] and sub.name == "pets" and sub[0] == ("seen", 1)
    assert ds.subset([]).files == [] and len(ds) == 6  # the original is unchanged


def test_an_unreadable_file_is_a_data_error_naming_it(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really")
    with pytest.raises(DataError, match="bad.jpg"):
        ImageFiles([str(bad)], [0])[0]
