"""Data sets: IDX files, Fashion-MNIST discovery, folders and their errors, and resumable sharded batches."""

import numpy as np
import pytest
import torch
from conftest import make_fashion_mnist, write_idx

from barlowtwins.data.datasets import (
    DATASETS,
    build_dataset,
    default_val_split,
    image_folder,
    is_in_memory,
    labelled_folder,
    load_fashion_mnist,
    read_idx,
)
from barlowtwins.data.images import read_image
from barlowtwins.errors import DataError


def test_idx_round_trip_gz_and_plain(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "b.idx.gz"):
        write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(tmp_path / name), arr)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04\x05")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    arr = np.zeros((10, 5), dtype=np.uint8)
    write_idx(tmp_path / "t", arr)
    (tmp_path / "t").write_bytes((tmp_path / "t").read_bytes()[:-7])
    with pytest.raises(DataError, match="truncated"):
        read_idx(tmp_path / "t")


def test_fashion_mnist_from_a_folder(tmp_path):
    folder = make_fashion_mnist(tmp_path / "fm", n_train=30, n_test=20)
    train = load_fashion_mnist(folder, "train")
    test = build_dataset("fashion-mnist", folder, "test")
    assert train.images.shape == (30, 1, 28, 28) and train.images.dtype == torch.uint8
    assert len(test) == 20 and test.labels.tolist() == [i % 10 for i in range(20)]
    assert train.num_classes == 10 and train.classes[0] == "T-shirt/top"
    # The torchvision download layout is found too.
    tv = make_fashion_mnist(tmp_path / "tv" / "FashionMNIST" / "raw")
    assert len(load_fashion_mnist(tmp_path / "tv")) == 64 and tv.exists()


def test_fashion_mnist_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr("barlowtwins.data.datasets.FASHION_MNIST_DIRS", ())
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "nothing")


def test_labelled_and_unlabelled_folders(image_tree):
    train = labelled_folder(image_tree, "train")
    assert train.classes == ["cat", "dog"] and len(train) == 12
    img, label = train[0]
    assert img.mode == "RGB" and label == 0
    assert {f.rsplit(".", 1)[1] for f in train.files} == {"jpg", "png"}
    flat = image_folder(image_tree)  # recursive, no labels
    assert len(flat) == 24 and (flat.labels == -1).all()


def test_folders_apply_a_transform_to_each_pil_image(image_tree):
    seen = []

    def transform(img):
        seen.append((img.mode, img.size))
        return torch.tensor(img.size)

    flat = image_folder(image_tree, transform=transform)
    x, label = flat[1]
    assert label == -1 and seen == [("RGB", read_image(flat.files[1]).size)] and x.tolist() == list(seen[0][1])
    assert flat.subset([0, 1]).transform is transform  # subsets keep it
    train = labelled_folder(image_tree, "train", transform=transform)
    x, label = train[len(train) - 1]
    assert label == 1 and x.tolist() == list(read_image(train.files[-1]).size)
    assert image_folder(image_tree)[0][0].mode == "RGB"  # no transform: the PIL image itself


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        labelled_folder(tmp_path / "missing", "train")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class sub-folders"):
        labelled_folder(tmp_path / "empty", "train")
    (tmp_path / "empty" / "train" / "cls").mkdir()
    (tmp_path / "empty" / "train" / "cls" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images"):
        labelled_folder(tmp_path / "empty", "train")
    with pytest.raises(DataError, match="no images found"):
        image_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="needs --data-dir"):
        build_dataset("images", None)
    with pytest.raises(DataError, match="unknown data set"):
        build_dataset("mnist2")


def test_registry_names_splits_and_storage(fmnist_dir, image_tree):
    assert set(DATASETS) == {"fashion-mnist", "cifar10", "cifar100", "stl10", "folder", "images"}
    assert default_val_split("cifar10") == "test" and default_val_split("folder") == "val"
    assert is_in_memory(build_dataset("fashion-mnist", fmnist_dir)) and DATASETS["fashion-mnist"].in_memory
    assert not is_in_memory(build_dataset("folder", image_tree)) and not DATASETS["folder"].in_memory
    with pytest.raises(DataError, match="has splits train, test, not 'val'"):
        build_dataset("fashion-mnist", fmnist_dir, "val")






def test_align_classes_numbers_the_evaluation_split_by_the_training_split(tmp_path):
    """Folder splits number their classes by their own sub-folders; `align_classes` maps the evaluation split
    onto the training split's numbering by name, and a class training lacks gets -1 (scored as wrong)."""
    from conftest import make_image_folder

    from barlowtwins.data.datasets import InMemoryImages, align_classes

    make_image_folder(tmp_path / "f", classes=("a", "b", "c"), per_class=2, size=8, splits=("train",))
    make_image_folder(tmp_path / "f", classes=("b", "c", "d"), per_class=2, size=8, splits=("val",))
    train, val = labelled_folder(tmp_path / "f", "train"), labelled_folder(tmp_path / "f", "val")
    assert val.labels.tolist() == [0, 0, 1, 1, 2, 2]  # b, c, d: numbered by the split itself
    aligned, al = align_classes(train, val)
    assert aligned.labels.tolist() == [1, 1, 2, 2, -1, -1] and aligned.classes == ["a", "b", "c"]
    assert aligned.files == val.files and val.labels.tolist() == [0, 0, 1, 1, 2, 2]  # a copy; val unchanged
    assert al.only_train == ("a",) and al.only_eval == ("d",) and al.unscorable_images == 2
    lines = al.warnings()
    assert len(lines) == 2 and "'a'" in lines[0] and "'d'" in lines[1] and "scored as wrong" in lines[1]
    assert al.to_record()["class_mismatch"]["scored_as"] == "wrong"

    # The same classes: nothing changes, nothing to say; data without class names is left as it is.
    same, al = align_classes(train, labelled_folder(tmp_path / "f", "train"))
    assert same.labels.tolist() == train.labels.tolist() and al.warnings() == []
    assert al.to_record() == {"classes": ["a", "b", "c"]}
    images = torch.zeros(4, 1, 8, 8, dtype=torch.uint8)
    bare = InMemoryImages(images, torch.tensor([0, 1, 0, 1]))
    assert align_classes(bare, bare)[0] is bare
    multi = labelled_folder(tmp_path / "f", "val")
    multi.targets = torch.ones(len(multi), 3)
    assert align_classes(train, multi)[0].targets is multi.targets  # other attributes travel with the copy
