"""The ``memory`` data path (`data.paths.memory`): an in-memory data set sliced per batch and both views (and
multi-crop's small crops) made batched on the device, as a pure function of (seed, step, position)."""

import pytest
import torch
from conftest import epoch_views

from barlowtwins.data.datasets import load_fashion_mnist
from barlowtwins.data.paths.memory import MemoryPath
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.transforms.multicrop import MultiCrop
from barlowtwins.transforms.spec import augment_config

CPU = torch.device("cpu")


@pytest.fixture
def data(fmnist_dir):
    return load_fashion_mnist(fmnist_dir)  # 64 images, 28 x 28, one channel


def test_in_memory_data_takes_the_memory_path_whatever_is_asked(data):
    for asked in ("auto", "cpu", "device"):
        pipe = build_pipeline(data, augment_config(16, 1), batch_size=8, seed=0, device=CPU, data_path=asked)
        assert isinstance(pipe, MemoryPath) and pipe.kind == "memory"


def test_batches_are_slices_of_the_images_and_views_rgb_floats(data):
    pipe = build_pipeline(data, augment_config(16, 1), batch_size=8, seed=0, device=CPU)
    batches = list(pipe.epoch(0))
    assert len(batches) == len(pipe) == 8
    seen = []
    for images, labels, idx in batches:
        assert images.dtype == torch.uint8 and images.shape == (8, 1, 28, 28)
        assert torch.equal(images, data.images[idx]) and torch.equal(labels, data.labels[idx])
        seen += idx.tolist()
    assert sorted(seen) == list(range(64))  # one epoch: every image once, shuffled
    assert seen != list(range(64))
    x1, x2 = pipe.views(batches[0][0], 0)
    assert x1.shape == x2.shape == (8, 3, 16, 16) and x1.dtype == torch.float32 and not torch.equal(x1, x2)


def test_the_views_of_a_step_are_the_same_when_drawn_again(data):
    a = epoch_views(build_pipeline(data, augment_config(16, 1), batch_size=8, seed=4, device=CPU), 1)
    b = epoch_views(build_pipeline(data, augment_config(16, 1), batch_size=8, seed=4, device=CPU), 1)
    c = epoch_views(build_pipeline(data, augment_config(16, 1), batch_size=8, seed=5, device=CPU), 1)
    for (ia, va), (ib, vb) in zip(a, b):
        assert ia == ib and all(torch.equal(x, y) for x, y in zip(va, vb))
    assert not torch.equal(a[0][1][0], c[0][1][0])  # another seed, other views


def test_multi_crop_adds_its_small_crops_after_the_two_views(data):
    pipe = build_pipeline(data, augment_config(16, 1), batch_size=8, seed=0, device=CPU,
                          multicrop=MultiCrop(count=3, size=8, scale=(0.2, 0.5)))
    images, _, _ = next(iter(pipe.epoch(0)))
    views = pipe.all_views(images, 0)
    assert len(views) == pipe.num_views == 5
    assert [tuple(v.shape) for v in views] == [(8, 3, 16, 16)] * 2 + [(8, 3, 8, 8)] * 3
    two = pipe.views(images, 0)  # the two full views alone are the same as with the crops
    assert torch.equal(two[0], views[0]) and torch.equal(two[1], views[1])
    assert not torch.equal(views[2], views[3])  # each crop its own draw
