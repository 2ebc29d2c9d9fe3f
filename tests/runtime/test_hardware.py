"""The usable-CPU count (the affinity mask where there is one, the machine's count otherwise) and the device a
rank picks (its local rank modulo the GPUs it sees), with torch.cuda faked on this CPU machine."""

import os

import pytest
import torch

from barlowtwins.data.sampling import default_workers
from barlowtwins.errors import ConfigError
from barlowtwins.runtime import hardware


def test_usable_cpus_follows_the_affinity_mask(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert hardware.usable_cpus() == 3
    assert default_workers(1) == 2  # the loaders' default is built on it: usable CPUs per process - 1


def test_usable_cpus_without_an_affinity_mask(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert hardware.usable_cpus() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)  # unknown: one
    assert hardware.usable_cpus() == 1


def _fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize("visible, local_rank, index", [(1, 3, 0), (1, 0, 0), (8, 3, 3), (4, 6, 2)])
def test_a_rank_uses_its_local_rank_modulo_the_gpus_it_sees(monkeypatch, visible, local_rank, index):
    """One GPU per task (SLURM's or a container's CUDA_VISIBLE_DEVICES): local rank 3 -> cuda:0, not an
    invalid ordinal; all GPUs visible: cuda:<local rank>."""
    _fake_gpus(monkeypatch, visible)
    assert hardware.cuda_index(local_rank) == index
    assert hardware.select_device("auto", local_rank) == torch.device("cuda", index)
    assert hardware.select_device("cuda", local_rank) == torch.device("cuda", index)
    assert hardware.select_device("cuda:0", local_rank) == torch.device("cuda", 0)  # an explicit index is kept


def test_without_gpus(monkeypatch):
    _fake_gpus(monkeypatch, 0)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert hardware.cuda_index(3) == 0  # no GPU visible: no division by zero (and no device is set)
    assert hardware.select_device("auto", 3) == torch.device("cpu")
    with pytest.raises(ConfigError, match="use --device cpu"):
        hardware.select_device("cuda", 3)
