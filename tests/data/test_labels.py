"""One label reader for tables and shards: integers within a bound, names mapped to sorted classes, anything
else one line naming where it came from."""

import numpy as np
import pytest

from barlowtwins.data.labels import MAX_CLASSES, read_labels
from barlowtwins.errors import DataError


def test_integers_and_missing_values():
    assert read_labels([0, 2, None, -1, np.int64(1)], "t") == ([0, 2, -1, -1, 1], ["0", "1", "2"], False)
    assert read_labels([None, None], "t") == ([-1, -1], [], False)
    assert read_labels([b"3", b" 1\n", "0"], "t") == ([3, 1, 0], ["0", "1", "2", "3"], False)  # .cls text


def test_names_become_sorted_classes_or_follow_the_recorded_names():
    assert read_labels(["dog", "cat", None, b"dog"], "t") == ([1, 0, -1, 1], ["cat", "dog"], True)
    assert read_labels(["dog", "cat"], "t", names=["dog", "cat", "emu"]) == ([0, 1], ["dog", "cat", "emu"], True)
    assert read_labels([1, 0], "t", names=["cat", "dog"]) == ([1, 0], ["cat", "dog"], True)


@pytest.mark.parametrize("values, match", [
    ([0, 0.5], "label 1 is the number 0.5"),
    ([1.0, 0.0], "label 0 is the float 1.0"),
    ([True], "label 0 is the boolean"),
    ([0, "cat"], "mix class names"),
    ([10 ** 12], f"label {10 ** 12} is not a class index \\(0 to {MAX_CLASSES - 1}"),
    ([-2], "label -2 is not a class index"),
    ([b"\xff\xfe"], "bytes that are not UTF-8"),
    ([[1, 2]], "label 0 is a list"),
])
def test_anything_else_is_one_line_naming_the_source(values, match):
    with pytest.raises(DataError, match=match) as e:
        read_labels(values, "the data set x.parquet, column 'y'")
    assert str(e.value).startswith("the data set x.parquet, column 'y': ") and "\n" not in str(e.value)


def test_labels_and_recorded_names_that_disagree():
    with pytest.raises(DataError, match="label 2 but only 2 class names"):
        read_labels([0, 2], "t", names=["cat", "dog"])
    with pytest.raises(DataError, match="'emu' is not one of the 2 recorded class names"):
        read_labels(["emu"], "t", names=["cat", "dog"])


def test_a_huge_label_allocates_nothing():
    """A label of 1e12 once made a list of 10^12 class names (killed at 23.8 GB); now the bound refuses it."""
    with pytest.raises(DataError):
        read_labels([0] * 1000 + [10 ** 12], "t")
