"""The transfer data-set registry: one entry per data set (reader, default splits, protocol), `build_transfer_dataset`
the one entry point, and a registered data set read like the built-in ones."""

import pytest

from barlowtwins.data.datasets import ImageFiles, labelled_folder
from barlowtwins.data.transfer import (
    TRANSFER_DATASETS,
    TransferDataset,
    build_transfer_dataset,
    register_transfer_dataset,
    transfer_spec,
)
from barlowtwins.errors import DataError


@pytest.fixture
def restore_registry():
    saved = dict(TRANSFER_DATASETS)
    yield
    TRANSFER_DATASETS.clear()
    TRANSFER_DATASETS.update(saved)


def test_the_built_in_entries():
    assert list(TRANSFER_DATASETS) == ["folder", "inat2018", "places205", "voc2007"]
    assert transfer_spec("voc2007").protocol == "svm" and transfer_spec("voc2007").splits == ("trainval", "test")
    for name in ("folder", "inat2018", "places205"):
        assert transfer_spec(name).protocol == "linear" and transfer_spec(name).splits == ("train", "val"), name


def test_folder_through_the_registry_with_its_default_split(image_tree):
    ds = build_transfer_dataset("folder", str(image_tree))  # the entry's training split: train
    ref = labelled_folder(image_tree, "train")
    assert ds.files == ref.files and ds.labels.tolist() == ref.labels.tolist() and len(ds) == 12
    val = build_transfer_dataset("folder", str(image_tree), "val")
    assert val.files == labelled_folder(image_tree, "val").files


def test_bad_names_and_missing_root_are_one_line():
    with pytest.raises(DataError, match=r"unknown transfer data set 'cub200'( \(did you mean \w+\?\))?; "
                                        "choose one of folder, inat2018, places205, voc2007"):
        build_transfer_dataset("cub200", "/data")
    with pytest.raises(DataError, match="--dataset places205 needs --data-dir"):
        build_transfer_dataset("places205", None)
    with pytest.raises(ValueError, match="protocol must be one of linear, svm"):
        TransferDataset("x", lambda root, split, image_root: None, ("a", "b"), "knn", "x")


def test_a_registered_data_set_is_read_through_the_registry(restore_registry, image_tree):
    calls = []

    def reader(root, split, image_root):
        calls.append((root, split, image_root))
        return labelled_folder(root, {"fit": "train", "eval": "val"}[split])

    register_transfer_dataset(TransferDataset("renamed", reader, ("fit", "eval"), "linear",
                                              "folder, other split names"))
    assert list(TRANSFER_DATASETS)[-1] == "renamed"
    train = build_transfer_dataset("renamed", str(image_tree), None, "imgs")
    test = build_transfer_dataset("renamed", str(image_tree), "eval")
    assert isinstance(train, ImageFiles) and len(train) == len(test) == 12
    assert calls == [(str(image_tree), "fit", "imgs"), (str(image_tree), "eval", None)]
