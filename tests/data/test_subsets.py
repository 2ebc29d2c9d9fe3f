"""Labelled subsets for fine-tuning: the class-balanced draw, names matched to files, and list files written and
read back (file names, relative paths or indices), with one-line errors for lists that do not fit the data."""

from types import SimpleNamespace

import pytest
import torch

from barlowtwins.data.subsets import (
    balanced_subset,
    imagenet_subset_names,
    is_imagenet_folder,
    parse_subset_lines,
    read_subset_file,
    select_by_names,
    write_subset_file,
)
from barlowtwins.errors import DataError

FILES = ["/data/train/a/x_1.jpg", "/data/train/a/x_2.jpg", "/data/train/b/y_1.jpg", "/data/val/b/y_1.jpg"]


def test_a_balanced_subset_takes_a_share_of_every_class_and_at_least_one():
    labels = torch.tensor([0] * 20 + [1] * 10 + [2] * 3 + [-1] * 5)  # -1: unlabelled, never picked
    idx = balanced_subset(labels, 10, seed=0)
    assert torch.equal(idx, idx.sort().values) and len(set(idx.tolist())) == len(idx)
    assert torch.bincount(labels[idx]).tolist() == [2, 1, 1]  # 10% of 20, of 10, and at least one of 3
    assert torch.equal(balanced_subset(labels, 100), torch.arange(33))  # 100%: every labelled sample


@pytest.mark.parametrize("percent", [0, -5, 100.5])
def test_a_percentage_outside_0_to_100_is_refused(percent):
    with pytest.raises(DataError, match=r"--train-percent must be in \(0, 100\]"):
        balanced_subset(torch.arange(10) % 2, percent)


def test_only_the_standard_imagenet_percentages_have_lists():
    with pytest.raises(DataError, match="1% and 10%, not 5%"):
        imagenet_subset_names(5)


def test_subset_lines_give_the_class_prefix():
    assert parse_subset_lines(["n01440764_10026.JPEG", "  ", "n0_a_b.JPEG\n"]) == [
        ("n01440764", "n01440764_10026.JPEG"), ("n0", "n0_a_b.JPEG")]
    with pytest.raises(DataError, match="subset line 'cat.jpg' is not an ImageNet file name"):
        parse_subset_lines(["cat.jpg"])


def test_names_match_base_names_or_trailing_paths():
    assert select_by_names(FILES, ["x_2.jpg", "x_1.jpg"], "the list").tolist() == [0, 1]  # sorted indices
    assert select_by_names(FILES, ["y_1.jpg"], "the list").tolist() == [2]  # the first file of that name
    assert select_by_names(FILES, ["val/b/y_1.jpg"], "the list").tolist() == [3]  # a path picks one of them
    assert select_by_names(FILES, ["x_1.jpg", "a/x_1.jpg"], "the list").tolist() == [0]  # listed twice: once


def test_names_not_in_the_data_set_are_counted_and_one_named():
    with pytest.raises(DataError, match=r"2 of 3 images of my list are not in the data set \(e.g. z.jpg\); "
                                        "check --data-dir") as e:
        select_by_names(FILES, ["z.jpg", "x_1.jpg", "b/z.jpg"], "my list")
    assert "\n" not in str(e.value)


def test_a_written_list_of_file_names_reads_back_as_the_same_indices(tmp_path):
    ds = SimpleNamespace(files=FILES[:3])
    path = write_subset_file(tmp_path / "s.txt", ds, torch.tensor([0, 2]))
    assert path.read_text() == "x_1.jpg\ny_1.jpg\n"
    assert read_subset_file(path, ds).tolist() == [0, 2]


def test_a_data_set_without_files_writes_and_reads_indices(tmp_path):
    ds = [0] * 10  # an in-memory data set: no file names
    path = write_subset_file(tmp_path / "s.txt", ds, torch.tensor([7, 3]))
    assert path.read_text() == "7\n3\n"
    assert read_subset_file(path, ds).tolist() == [3, 7]
    (tmp_path / "c.txt").write_text("# picked by hand\n5\n5\n\n1\n")  # comments, blanks and repeats
    assert read_subset_file(tmp_path / "c.txt", ds).tolist() == [1, 5]


@pytest.mark.parametrize("content, ds, message", [
    (None, [0] * 4, "does not exist"),
    ("\n# nothing\n", [0] * 4, "is empty"),
    ("1\n9\n", [0] * 4, "lists index 9 but the data set has 4 samples"),
    ("x_1.jpg\n", [0] * 4, "lists names, but this data set has no files; list integer indices"),
    ("nope.jpg\n", SimpleNamespace(files=FILES), "1 of 1 images of subset file"),
])
def test_a_list_file_that_does_not_fit_is_one_line(tmp_path, content, ds, message):
    path = tmp_path / "list.txt"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as e:
        read_subset_file(path, ds)
    assert "\n" not in str(e.value)


def test_an_imagenet_folder_is_known_by_its_1000_wordnet_classes():
    wnids = [f"n{i:08d}" for i in range(1000)]
    assert is_imagenet_folder(SimpleNamespace(classes=wnids))
    assert not is_imagenet_folder(SimpleNamespace(classes=wnids[:999]))
    assert not is_imagenet_folder(SimpleNamespace(classes=wnids[:999] + ["cat"]))
    assert not is_imagenet_folder([0, 1, 2])  # no classes at all
