"""The online kNN monitor (``--knn-every``): its labelled data loaded and capped once, when it is made, one class
map for both splits, and top-1 at k=20 and k=200 of a backbone's features."""

import pytest
import torch
from conftest import make_image_folder, tiny_config

from barlowtwins.errors import DataError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.training import preflight
from barlowtwins.training.knn_monitor import KnnMonitor


def test_the_knn_monitor_owns_its_capped_data(fmnist_dir, tmp_path):
    assert preflight.check_knn_data(tiny_config(fmnist_dir, tmp_path / "r")) is None  # no --knn-every: no monitor
    cfg = tiny_config(fmnist_dir, tmp_path / "r", knn_every=1, knn_max_samples=10)
    a, b = preflight.check_knn_data(cfg), preflight.check_knn_data(cfg)
    assert len(a.train_set) == len(a.val_set) == 10  # 64 train and 32 test images, capped
    assert a.train_set is not b.train_set  # each monitor holds its own data: nothing cached behind its back
    assert [a.train_set[i][1] for i in range(10)] == [b.train_set[i][1] for i in range(10)]  # the same subset
    torch.manual_seed(0)
    result = a(create_backbone("resnet18", stem="small", width=8), torch.device("cpu"), None)
    assert set(result) == {"knn_k=20_top1", "knn_k=200_top1"} and all(0 <= v <= 100 for v in result.values())


def test_the_val_split_is_numbered_by_the_training_splits_classes(tmp_path):
    root = make_image_folder(tmp_path / "pets", classes=("cat", "dog", "eel"), per_class=2, size=20)
    for f in (root / "val" / "cat").iterdir():  # a validation split without the first class
        f.unlink()
    (root / "val" / "cat").rmdir()
    cfg = tiny_config(root, tmp_path / "r", dataset="folder", knn_every=1, workers=0)
    monitor = KnnMonitor(cfg)
    assert monitor.train_set.classes == ["cat", "dog", "eel"] and len(monitor.val_set) == 4
    assert sorted(monitor.val_set[i][1] for i in range(4)) == [1, 1, 2, 2]  # dog and eel keep their numbers


class SquareFinder(torch.nn.Module):
    """A "backbone" whose features are the mask of the bright square that marks each fake Fashion-MNIST class
    (conftest.make_fashion_mnist): images of a class share it exactly, other classes' squares sit elsewhere."""

    def forward(self, x):
        return (x.mean(1) > 0).flatten(1).float()  # normalised: the square (220) above 0, the background below


class Blind(torch.nn.Module):
    """Every image alike: the neighbours say nothing about the class."""

    def forward(self, x):
        return torch.ones(len(x), 4)


def test_a_backbone_that_separates_the_classes_scores_100_at_both_k(fmnist_dir, tmp_path):
    """The monitor reads its own data (--knn-dataset/--knn-data-dir), not the pretraining data set's folder."""
    cfg = tiny_config(tmp_path / "elsewhere", tmp_path / "r", image_size=28, knn_every=1,
                      knn_dataset="fashion-mnist", knn_data_dir=str(fmnist_dir))
    monitor = KnnMonitor(cfg)
    assert len(monitor.train_set) == 64 and len(monitor.val_set) == 32
    assert monitor(SquareFinder(), torch.device("cpu"), None) == {"knn_k=20_top1": 100.0, "knn_k=200_top1": 100.0}
    blind = monitor(Blind(), torch.device("cpu"), None)
    assert all(v < 50 for v in blind.values())


def test_missing_knn_data_fails_when_the_monitor_is_made(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path / "r", knn_every=1, knn_dataset="folder",
                      knn_data_dir=str(tmp_path / "missing"))
    with pytest.raises(DataError, match="does not exist"):
        KnnMonitor(cfg)
