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
    with pytest.raises(ConfigError, match="use device cpu"):
        hardware.select_device("cuda", 3)


def _cpu(monkeypatch, amx: bool | None, avx: bool | None, flags: str = ""):
    """This CPU as one with (or without) AMX / AVX512-BF16: torch's checks (None: torch without them) and the
    kernel's flags; the environment override unset."""
    monkeypatch.delenv(hardware.CPU_BF16_ENV, raising=False)
    for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: set(flags.split()))


@pytest.mark.parametrize("amx, avx, flags, feature", [
    (True, True, "", "AMX"),
    (False, True, "", "AVX512-BF16"),
    (False, False, "avx512_bf16", None),  # torch's answer wins where it has one
    (None, None, "fpu avx512f avx512_bf16", "AVX512-BF16"),  # an older torch: the kernel's flags
    (None, None, "fpu amx_bf16 amx_tile avx512_bf16", "AMX"),
    (None, None, "fpu avx2 avx512f", None),
])
def test_the_cpu_bf16_feature_is_read_from_torch_or_the_cpu_flags(monkeypatch, amx, avx, flags, feature):
    _cpu(monkeypatch, amx, avx, flags)
    assert hardware.cpu_bf16_feature() == feature


def test_auto_is_bf16_only_on_a_cpu_that_does_it_natively_and_bf16_elsewhere_is_one_line(monkeypatch):
    cpu = torch.device("cpu")
    _cpu(monkeypatch, False, True)
    chosen = hardware.choose_precision("auto", cpu)
    assert chosen.dtype == torch.bfloat16 and chosen.name == "bf16"
    assert chosen.describe() == "bf16 autocast (auto: this CPU does bf16 natively, AVX512-BF16)"
    assert hardware.choose_precision("bf16", cpu).reason == "asked for: this CPU does bf16 natively, AVX512-BF16"
    assert hardware.choose_precision("fp32", cpu).dtype is None

    _cpu(monkeypatch, False, False)
    chosen = hardware.choose_precision("auto", cpu)
    assert chosen.dtype is None and chosen.describe() == (
        "fp32 (auto: this CPU has no native bf16, neither AVX512-BF16 nor AMX)")
    with pytest.raises(ConfigError, match=r"^precision bf16: this CPU has no native bf16 .*use precision auto or "
                                          r"fp32$"):
        hardware.choose_precision("bf16", cpu)
    with pytest.raises(ConfigError, match="unknown precision 'fp16'; choose auto, fp32 or bf16"):
        hardware.choose_precision("fp16", cpu)


def test_the_environment_override_answers_before_the_processor(monkeypatch):
    _cpu(monkeypatch, True, True)
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "0")
    assert hardware.cpu_bf16_feature() is None
    assert hardware.autocast_dtype("auto", torch.device("cpu")) is None
    _cpu(monkeypatch, False, False)
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "1")
    assert hardware.autocast_dtype("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setenv(hardware.CPU_BF16_ENV, "maybe")  # not 0 or 1: the processor answers
    assert hardware.cpu_bf16_feature() is None
