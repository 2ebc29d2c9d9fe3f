"""Device and precision choice, the same for pretraining and evaluation."""

from __future__ import annotations

import contextlib
import os

import torch

from barlowtwins.errors import ConfigError


def cuda_index(local_rank: int) -> int:
    """The CUDA device of the process with this node-local rank: ``local_rank`` modulo the GPUs it sees. Where
    SLURM or a container shows each task only its own GPU (``CUDA_VISIBLE_DEVICES``), local rank 3 sees one
    device, index 0; `init_distributed` and `select_device` both use this, so they name the same device."""
    return local_rank % max(1, torch.cuda.device_count())


def select_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this rank's CUDA GPU (`cuda_index`), else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", cuda_index(local_rank))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
        return torch.device("cuda", cuda_index(local_rank)) if name == "cuda" else torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise ConfigError("--device mps was asked for but MPS is not available; use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device '{name}'; choose auto, cuda, mps or cpu")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for float32. ``auto`` = bf16 on CUDA GPUs that support it."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise ConfigError(f"unknown precision '{precision}'; choose auto, fp32 or bf16")


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small CPU tensor on ``device`` without stalling the host: copies to CUDA from pinned memory are
    asynchronous, while those from pageable memory first wait for the stream (all queued GPU work)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def usable_cpus() -> int:
    """The CPU cores this process may run on: its affinity mask (taskset, SLURM's ``--cpus-per-task``, a
    container's cpuset), which ``os.cpu_count()`` (every core of the machine) ignores."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
