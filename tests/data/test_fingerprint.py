"""A data set's fingerprint (kept in checkpoints) and the one line that says how a data set changed."""

import shutil

import torch
from conftest import make_image_folder

from barlowtwins.data.datasets import InMemoryImages, image_folder, labelled_folder
from barlowtwins.data.fingerprint import compare, fingerprint


def test_a_folders_fingerprint_follows_its_file_list_not_its_location(tmp_path):
    root = make_image_folder(tmp_path / "a", per_class=3, size=8, splits=("train",))
    saved = fingerprint(labelled_folder(root, "train"), sizes=True)
    assert saved["count"] == 6 and saved["kind"] == "files"
    assert compare(saved, fingerprint(labelled_folder(root, "train"), sizes=True)) is None

    shutil.copytree(tmp_path / "a", tmp_path / "moved" / "elsewhere")  # the same data at another path
    moved = fingerprint(labelled_folder(tmp_path / "moved" / "elsewhere", "train"), sizes=True)
    assert moved == saved and compare(saved, moved) is None

    shutil.copy(root / "train" / "cat" / "cat_0.jpg", root / "train" / "cat" / "extra.jpg")
    assert compare(saved, fingerprint(labelled_folder(root, "train"))) == \
        "the data set changed since the checkpoint was written: 6 images then, 7 now"

    (root / "train" / "cat" / "cat_0.jpg").unlink()  # 6 again, one of another name
    change = compare(saved, fingerprint(labelled_folder(root, "train")))
    assert change.endswith("the list of files (names differ), with 6 images in both") and "\n" not in change


def test_the_same_files_in_another_order_or_of_another_size_are_a_change(tmp_path):
    root = make_image_folder(tmp_path / "a", per_class=2, size=8, splits=("train",))
    ds = image_folder(root)
    saved = fingerprint(ds, sizes=True)
    shuffled = ds.subset([1, 0, 2, 3])
    assert "in another order" in compare(saved, fingerprint(shuffled))
    with open(ds.files[0], "ab") as f:
        f.write(b"\0" * 10)
    assert "the size of some files" in compare(saved, fingerprint(ds, sizes=True))
    assert compare(saved, fingerprint(ds)) is None  # sizes compared only when both kept them


def test_in_memory_fingerprints_and_what_cannot_be_compared():
    images = torch.arange(10 * 3 * 4 * 4, dtype=torch.int64).remainder(251).to(torch.uint8).reshape(10, 3, 4, 4)
    labels = torch.arange(10) % 3
    saved = fingerprint(InMemoryImages(images, labels, name="cifar10"))
    assert saved["count"] == 10 and saved["shape"] == [3, 4, 4]
    assert compare(saved, fingerprint(InMemoryImages(images.clone(), labels.clone(), name="cifar10"))) is None
    assert compare(saved, fingerprint(InMemoryImages(images[:9], labels[:9], name="cifar10"))).endswith(
        "10 images then, 9 now")
    assert "its name (cifar10 then, cifar100 now)" in compare(saved, fingerprint(
        InMemoryImages(images, labels, name="cifar100")))
    other = images.clone()
    other[-1] += 1  # the last image is always among those hashed
    assert "the images" in compare(saved, fingerprint(InMemoryImages(other, labels, name="cifar10")))
    assert "the labels" in compare(saved, fingerprint(InMemoryImages(images, labels.flip(0), name="cifar10")))
    assert "the image shape ([3, 4, 4] then, [3, 2, 8] now)" in compare(saved, fingerprint(
        InMemoryImages(images.reshape(10, 3, 2, 8), labels, name="cifar10")))
    files = {"version": 1, "kind": "files", "count": 10, "files_sha256": "x", "order_sha256": "y"}
    assert compare(saved, files).endswith(": memory then, files now")
    assert compare(None, saved) is None and compare({}, saved) is None  # a checkpoint from before fingerprints
    assert compare(dict(saved, version=0), saved) is None
    other_kind = fingerprint(torch.utils.data.TensorDataset(torch.zeros(4, 2)))
    assert other_kind == {"version": 1, "kind": "TensorDataset", "count": 4} and compare(other_kind, other_kind) is None
