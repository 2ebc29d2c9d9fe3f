"""One placement for the three trainers: the per-rank batch (one line when it does not divide), the device and
memory format, and DDP with synchronised BN under a process group (2 gloo ranks)."""

import pytest
import torch
from torch import nn

from barlowtwins.errors import ConfigError
from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.placement import per_rank_batch, place_model


def test_the_per_rank_batch_or_one_line():
    assert per_rank_batch(256, 4) == 64 and per_rank_batch(3, 1) == 3
    with pytest.raises(ConfigError, match="--batch-size 10 is global and must divide evenly over 4 processes"):
        per_rank_batch(10, 4)
    with pytest.raises(ConfigError, match="--batch 10"):
        per_rank_batch(10, 3, flag="--batch")


def test_one_process_gets_the_plain_model_in_the_format_it_can_take():
    net = create_backbone("resnet18", width=16)
    placed = place_model(net, torch.device("cpu"), world=1, channels_last=True)
    assert placed.raw is net and placed.called is net and placed.channels_last
    assert net.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    narrow = create_backbone("resnet18", stem="small", width=8)
    assert not place_model(narrow, torch.device("cpu"), world=1, channels_last=True).channels_last
    assert not place_model(create_backbone("resnet18", width=16), torch.device("cpu"), world=1).channels_last


def _two_ranks(rank, port, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        placed = place_model(model, torch.device("cpu"), world=2, sync_bn=True, broadcast_buffers=False)
        is_ddp = isinstance(placed.called, nn.parallel.DistributedDataParallel)
        bn = type(placed.raw[1]).__name__
        torch.save({"ddp": is_ddp, "bn": bn, "same": placed.called.module is placed.raw}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_get_ddp_around_a_model_with_synchronised_bn(tmp_path):
    from conftest import free_port

    torch.multiprocessing.spawn(_two_ranks, args=(free_port(), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert got["ddp"] and got["same"] and got["bn"] != "BatchNorm2d"
