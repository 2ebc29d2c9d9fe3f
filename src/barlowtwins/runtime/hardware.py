"""Device and precision choice, the same for pretraining and evaluation."""

from __future__ import annotations

import contextlib
import dataclasses
import os

import torch

from barlowtwins.errors import ConfigError, field_error


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
            raise field_error(lambda n: f"{n('device')} cuda was asked for but PyTorch sees no CUDA GPU; use "
                                        f"{n('device')} cpu")
        return torch.device("cuda", cuda_index(local_rank)) if name == "cuda" else torch.device(name)
    if name == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise field_error(lambda n: f"{n('device')} mps was asked for but MPS is not available; use "
                                        f"{n('device')} cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"unknown device '{name}'; choose auto, cuda, mps or cpu")


# The environment variable that overrides what `cpu_bf16_feature` reads off the processor: ``0`` answers "no native
# bf16" (so ``--precision auto`` runs float32), ``1`` answers that the CPU has it. The test suite sets 0, so that its
# results do not depend on the machine it runs on.
CPU_BF16_ENV = "BARLOWTWINS_CPU_BF16"


def _cpu_flags() -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (Linux), empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_bf16_feature() -> str | None:
    """The instructions that make bf16 arithmetic native on this CPU, ``"AMX"`` or ``"AVX512-BF16"``, or None.

    oneDNN's bf16 convolutions and matrix products run on them (Intel Sapphire Rapids and later have AMX; Intel
    Cooper Lake and AMD Zen 4 and later AVX512-BF16); without either, bf16 is emulated and slower than float32.
    PyTorch's own CPU checks answer where it has them, the kernel's CPU flags otherwise. `CPU_BF16_ENV` overrides.
    """
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None and forced.strip() in ("0", "1"):
        return "AVX512-BF16 (BARLOWTWINS_CPU_BF16=1)" if forced.strip() == "1" else None
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if amx is not None and avx is not None:
        return "AMX" if amx() else "AVX512-BF16" if avx() else None
    flags = _cpu_flags()
    return "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else None


PRECISION_HELP = ("auto (bf16 on a CUDA GPU that supports it and on a CPU with native bf16: AVX512-BF16 or AMX; "
                  "else fp32), fp32 or bf16")


@dataclasses.dataclass(frozen=True)
class Precision:
    """The arithmetic a run or an evaluation uses: ``dtype`` for autocast (None: float32 throughout) and ``reason``,
    in words, for the run's first line and its config.yaml. Under bf16 autocast only the convolutions and matrix
    products run in bf16: weights, gradients, optimiser state, BatchNorm statistics and the loss stay float32."""

    dtype: torch.dtype | None
    reason: str

    @property
    def name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}.get(self.dtype, str(self.dtype))

    def describe(self) -> str:
        """``bf16 autocast (auto: this CPU does bf16 natively, AVX512-BF16)`` or ``fp32 (...)``."""
        return f"{self.name}{' autocast' if self.dtype is not None else ''} ({self.reason})"


def choose_precision(precision: str, device: torch.device) -> Precision:
    """``auto``: bf16 autocast on a CUDA GPU that supports it and on a CPU that does bf16 natively
    (`cpu_bf16_feature`), float32 elsewhere (MPS included). ``bf16`` asked on a CPU without native bf16 is refused
    in one line (emulated, it would run slower than float32); ``fp32`` is float32 everywhere."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"unknown precision '{precision}'; choose auto, fp32 or bf16")
    if precision == "fp32":
        return Precision(None, "asked for")
    if device.type == "cpu":
        feature = cpu_bf16_feature()
        if feature is None:
            if precision == "bf16":
                raise field_error(lambda n: f"{n('precision')} bf16: this CPU has no native bf16 (AVX512-BF16 or "
                                            "AMX), where bf16 is emulated and slower than float32; use "
                                            f"{n('precision')} auto or fp32")
            return Precision(None, "auto: this CPU has no native bf16, neither AVX512-BF16 nor AMX")
        how = "asked for" if precision == "bf16" else "auto"
        return Precision(torch.bfloat16, f"{how}: this CPU does bf16 natively, {feature}")
    if precision == "bf16":
        return Precision(torch.bfloat16, "asked for")
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return Precision(torch.bfloat16, "auto: the GPU supports bf16")
    return Precision(None, f"auto: float32 on {device.type}")


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of `choose_precision`, or None for float32."""
    return choose_precision(precision, device).dtype


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
