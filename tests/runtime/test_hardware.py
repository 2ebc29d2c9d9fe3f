"""The usable-CPU count: the affinity mask where there is one, the machine's count otherwise."""

import os

from barlowtwins.data.sampling import default_workers
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
