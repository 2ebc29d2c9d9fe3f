"""The official Barlow Twins pipeline the bench compares with: two normalised views per image (torchvision v1 and
PIL, per image), behind the official script's DataLoader; unreadable files dropped and counted when asked."""

import random

import pytest
import torch
from conftest import make_image_folder

from barlowtwins.bench import official_loader, official_transform
from barlowtwins.bench.official import _OfficialFiles, _readable_batches
from barlowtwins.data.bad_files import collect_bad_files
from barlowtwins.errors import DataError


@pytest.fixture
def files(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4, size=30, splits=("train",))
    return sorted(str(p) for p in root.rglob("*") if p.suffix in (".jpg", ".png"))


def test_two_different_normalised_views_of_the_size_asked(files):
    from PIL import Image

    random.seed(0)  # the official blur and solarisation draw from Python's random module, the crops from torch
    torch.manual_seed(0)
    with Image.open(files[0]) as img:
        v1, v2 = official_transform(24)(img.convert("RGB"))
    assert v1.shape == v2.shape == (3, 24, 24) and v1.dtype == torch.float32 and not torch.equal(v1, v2)
    for v in (v1, v2):  # normalised by the ImageNet mean and std: below 0 for dark pixels, within its bounds
        assert v.min() < 0 and -2.2 < v.min() and v.max() < 2.7


def test_the_loader_gives_full_batches_of_both_views(files):
    loader = official_loader(files, image_size=16, batch_size=3, workers=0)
    batches = list(loader)
    assert len(batches) == 2  # 8 files in batches of 3: the last one dropped
    (v1, v2), labels = batches[0]
    assert v1.shape == v2.shape == (3, 3, 16, 16) and labels.tolist() == [0, 0, 0]


def test_an_unreadable_file_is_dropped_and_counted_when_asked(files, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not an image")
    with pytest.raises(DataError, match="bad.jpg"):
        _OfficialFiles([str(bad)], 16)[0]
    loader = official_loader([*files, str(bad)], image_size=16, batch_size=9, workers=0, skip_unreadable=True)
    with collect_bad_files() as seen:
        batches = list(_readable_batches(loader))
    assert len(batches) == 1 and batches[0][0][0].shape[0] == 8  # the batch of 9, less the bad file
    assert [s["file"] for s in seen.as_list()] == [str(bad)]
