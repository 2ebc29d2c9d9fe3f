"""Global batches: sharded over ranks, each sample once per epoch, resumable mid-epoch, with workers."""

import torch

from barlowtwins.data.datasets import labelled_folder, load_fashion_mnist
from barlowtwins.data.sampling import BatchStream


def test_batch_stream_shards_cover_the_data_once(fmnist_dir):
    ds = load_fashion_mnist(fmnist_dir)  # 64 images
    seen = []
    for rank in range(2):
        stream = BatchStream(ds, 8, shuffle=True, drop_last=True, seed=3, rank=rank, world_size=2)
        assert len(stream) == 4
        for _, _, idx in stream.epoch(1):
            seen += idx.tolist()
    assert sorted(seen) == list(range(64))


def test_batch_stream_resumes_mid_epoch_with_the_same_batches(fmnist_dir):
    ds = load_fashion_mnist(fmnist_dir)
    stream = BatchStream(ds, 8, shuffle=True, drop_last=True, seed=0)
    full = [idx.tolist() for _, _, idx in stream.epoch(2)]
    resumed = [idx.tolist() for _, _, idx in stream.epoch(2, start=3)]
    assert resumed == full[3:]
    assert full != [idx.tolist() for _, _, idx in stream.epoch(3)]  # a new order each epoch


def test_batch_stream_over_files_with_workers(image_tree):
    from barlowtwins.evaluate.features import eval_transform

    ds = labelled_folder(image_tree, "val")
    stream = BatchStream(ds, 5, shuffle=False, drop_last=False, transform=eval_transform(16), workers=1)
    batches = list(stream.epoch(0))
    assert [len(b[2]) for b in batches] == [5, 5, 2]
    assert batches[0][0].shape == (5, 3, 16, 16) and batches[0][0].dtype == torch.uint8
    assert torch.cat([b[2] for b in batches]).tolist() == list(range(12))


def test_global_batches_are_split_into_contiguous_rank_slices(fmnist_dir):
    ds = load_fashion_mnist(fmnist_dir)
    one = [idx.tolist() for _, _, idx in BatchStream(ds, 16, shuffle=True, drop_last=True, seed=5).epoch(0)]
    shards = [[idx.tolist() for _, _, idx in BatchStream(ds, 8, shuffle=True, drop_last=True, seed=5, rank=r,
                                                          world_size=2).epoch(0)] for r in range(2)]
    assert len(one) == len(shards[0]) == 4
    for b in range(4):
        assert shards[0][b] + shards[1][b] == one[b]  # rank 0 then rank 1: the one-process batch
