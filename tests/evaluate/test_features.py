"""Frozen-feature extraction and its cache key."""

import torch


def test_feature_cache_key_covers_the_data_folder_and_precision(tmp_path):
    """Two folders with as many images, or another precision, never share cached features; they are stored in
    float32."""
    from conftest import make_image_folder

    from barlowtwins.data.datasets import image_folder
    from barlowtwins.evaluate.features import cached_features

    a = image_folder(make_image_folder(tmp_path / "a", per_class=2, size=10, splits=("train",), seed=1))
    b = image_folder(make_image_folder(tmp_path / "b", per_class=2, size=10, splits=("train",), seed=2))
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    kw = dict(key={"checkpoint": "x", "dataset": "images", "split": "train"}, cache_dir=tmp_path / "cache",
              image_size=8, device=torch.device("cpu"), batch_size=4, workers=0)
    fa, _ = cached_features(net, a, **kw)
    fb, _ = cached_features(net, b, **kw)
    assert not torch.equal(fa, fb), "the second folder got the first folder's features"
    cached_features(net, a, amp_dtype=torch.bfloat16, **kw)
    files = sorted((tmp_path / "cache").glob("features-*.pt"))
    assert len(files) == 3
    stored = torch.load(files[0], weights_only=True)["features"]
    assert stored.dtype == torch.float32
    again, _ = cached_features(net, a, **kw)
    assert torch.equal(again, fa)  # reused exactly (no float16 rounding)


def test_cached_features_come_back_with_the_data_sets_own_labels(tmp_path, capsys):
    """Features cached by an evaluation that numbered the classes per split are reused with the labels of the
    split as it is numbered now (one class map per evaluation), not with the cached ones."""
    from conftest import make_image_folder

    from barlowtwins.data.datasets import align_classes, labelled_folder
    from barlowtwins.evaluate.features import cached_features

    root = make_image_folder(tmp_path / "f", classes=("a", "b", "c"), per_class=2, size=10)
    val = labelled_folder(root, "val")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    kw = dict(key={"checkpoint": "x", "dataset": "folder", "split": "val"}, cache_dir=tmp_path / "cache",
              image_size=8, device=torch.device("cpu"), batch_size=4, workers=0, progress=True)
    first, labels = cached_features(net, val, **kw)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2]
    train = labelled_folder(root, "train")
    train.classes = ["b", "c", "a"]  # another numbering of the same classes
    train.labels = torch.tensor([2, 2, 0, 0, 1, 1])
    renumbered, _ = align_classes(train, val)
    again, labels = cached_features(net, renumbered, **kw)
    assert "reusing features" in capsys.readouterr().out and torch.equal(again, first)
    assert labels.tolist() == [2, 2, 0, 0, 1, 1]
