"""One code path for one process, torchrun and SLURM.

`init_distributed()` reads the launcher's environment (torchrun's RANK/WORLD_SIZE/LOCAL_RANK, or, when those are
absent, an srun step's SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID) and starts a process group only when the
world has more than one process. A batch script's own shell is not an srun step: a plain ``python`` there is one
process, whatever ``sbatch -n`` allocated. Everything else in the package asks `world_size()` / `rank()` and works
the same with or without a process group.

`all_reduce_sum` is the autograd-aware collective the loss needs: its backward all-reduces the incoming
gradient, so that (with DDP averaging gradients over ranks) every parameter gets exactly the gradient one
process would compute on the global batch. A plain `torch.distributed.all_reduce` would leave the gradient
1/world too small; `tests/test_distributed.py` shows both.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from barlowtwins.runtime.hardware import cuda_index
from barlowtwins.runtime.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def is_main_process() -> bool:
    return rank() == 0


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[012-015,020]`` (falls back to scontrol when present)."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    head, _, rest = nodelist.partition("[")
    if not rest:
        return head.split(",")[0]
    first = rest.split(",")[0].split("-")[0].rstrip("]")
    return head + first


def _int_or_zero(value: str | None) -> int:
    """A SLURM count such as ``8``; 0 for a missing or malformed one."""
    value = (value or "").strip()
    return int(value) if value.isdigit() else 0


def _slurm_port(env) -> str:
    """The rendezvous port of an srun step: the first port srun reserved for it (``--resv-ports``), else one
    derived from the job and step ids, so that two jobs (or two concurrent steps of one job) that share a node
    use different ports."""
    reserved = env.get("SLURM_STEP_RESV_PORTS", "").split(",")[0].split("-")[0].strip()
    if reserved.isdigit():
        return reserved
    return str(15000 + (_int_or_zero(env.get("SLURM_JOB_ID")) + _int_or_zero(env.get("SLURM_STEP_ID"))) % 20000)


def launcher_env(environ: dict[str, str] | None = None) -> dict[str, int | str] | None:
    """Rank layout from torchrun's variables, else from an srun step's, else None (a single process).

    Only srun sets ``SLURM_STEP_NUM_TASKS`` (the step's processes); the job's ``SLURM_NTASKS`` is also set in the
    batch script's shell, where a plain ``python`` is the only process and would wait forever for the others.
    The step's nodes (``SLURM_STEP_NODELIST``, else the job's) give the rendezvous host."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return {"rank": int(env["RANK"]), "world_size": int(env["WORLD_SIZE"]),
                "local_rank": int(env.get("LOCAL_RANK", 0))}
    world = _int_or_zero(env.get("SLURM_STEP_NUM_TASKS"))
    if "SLURM_PROCID" in env and world > 1:
        nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or "localhost"
        addr = env.get("MASTER_ADDR") or _first_slurm_host(nodes)
        port = env.get("MASTER_PORT") or _slurm_port(env)
        return {"rank": int(env["SLURM_PROCID"]), "world_size": world,
                "local_rank": int(env.get("SLURM_LOCALID", 0)), "master_addr": addr, "master_port": port}
    return None


def slurm_batch_warning(environ: dict[str, str] | None = None) -> str | None:
    """The line to warn with when SLURM allocated several tasks but this process is no srun step (a plain
    ``python`` in a batch script) and no other launcher started it; None otherwise."""
    env = os.environ if environ is None else environ
    tasks = _int_or_zero(env.get("SLURM_NTASKS"))
    if tasks > 1 and "SLURM_STEP_NUM_TASKS" not in env and not ("RANK" in env and "WORLD_SIZE" in env):
        return (f"warning: SLURM allocated {tasks} tasks but this process was not started by srun: running as one "
                "process; launch with srun to use them")
    return None


_warned_slurm_batch = False  # the warning above is said once per process, however often the group is asked for


def elastic_store_warning(environ: dict[str, str] | None = None) -> str | None:
    """The line to warn with when torchrun may restart its workers (``--max-restarts`` > 0) while handing them the
    store its agent keeps across restarts (torchrun's default with the c10d rendezvous): that store still holds
    the previous attempt's gloo/NCCL addresses, so a restarted rank can read a dead peer's address and fail to
    connect, leaving the others waiting until the process-group timeout. None otherwise."""
    env = os.environ if environ is None else environ
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and _int_or_zero(env.get("TORCHELASTIC_MAX_RESTARTS")) > 0:
        return ("warning: torchrun --max-restarts with its shared rendezvous store: a restart can hang connecting "
                "to a peer's old address; start torchrun with TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 set")
    return None


def local_world_size(environ: dict[str, str] | None = None) -> int:
    """Processes of this job on this node (they share its ``/dev/shm`` and CPUs): torchrun's LOCAL_WORLD_SIZE,
    else the tasks of this srun step on this node (``SLURM_STEP_TASKS_PER_NODE``, its first entry: ``4(x2),2`` ->
    4; the job's ``SLURM_TASKS_PER_NODE`` is not read: a plain ``python`` in a batch script is one process), else 1."""
    env = os.environ if environ is None else environ
    for key in ("LOCAL_WORLD_SIZE", "SLURM_STEP_TASKS_PER_NODE"):
        value = env.get(key, "").split(",")[0].split("(")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def init_distributed(device_type: str | None = None, timeout_minutes: float = 30.0) -> DistInfo:
    """Start the process group if a launcher asked for more than one process; return this process's place.

    Idempotent: a second call returns the existing layout. NCCL on CUDA, gloo otherwise.
    """
    if is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), dist.get_world_size(),
                        dist.get_backend())
    layout = launcher_env()
    if layout is None or int(layout["world_size"]) == 1:
        _warn_slurm_batch()
        return DistInfo()
    os.environ.setdefault("MASTER_ADDR", str(layout.get("master_addr", "127.0.0.1")))
    os.environ.setdefault("MASTER_PORT", str(layout.get("master_port", "29500")))
    os.environ["RANK"] = str(layout["rank"])
    os.environ["WORLD_SIZE"] = str(layout["world_size"])
    os.environ["LOCAL_RANK"] = str(layout["local_rank"])
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":  # the device `select_device` picks for this rank
        torch.cuda.set_device(cuda_index(int(layout["local_rank"])))
    line = elastic_store_warning()
    if line and int(layout["rank"]) == 0:
        log.warning(line)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    return DistInfo(int(layout["rank"]), int(layout["local_rank"]), int(layout["world_size"]), backend)


def _warn_slurm_batch() -> None:
    """Print `slurm_batch_warning` to stderr, the first time only."""
    global _warned_slurm_batch
    line = slurm_batch_warning()
    if line and not _warned_slurm_batch:
        _warned_slurm_batch = True
        log.warning(line)


def shutdown() -> None:
    """Leave the process group without a barrier (a barrier hangs if another rank already died)."""
    if is_initialized():
        dist.destroy_process_group()


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        # Every rank holds a replica of the sum and back-propagates its own copy of the (identical) loss;
        # summing those gradients gives world_size * dL/dx, which DDP's gradient averaging divides back out.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad, None


def all_reduce_sum(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Sum over ranks with gradients (identity without a process group)."""
    if not is_initialized() or dist.get_world_size(group) == 1:
        return tensor
    return _AllReduceSum.apply(tensor, group)


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every rank along dim 0 (no gradients; ranks may hold different lengths)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return tensor
    world = dist.get_world_size()
    n = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_int = [int(s.item()) for s in sizes]
    longest = max(sizes_int)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_int)])


def gather_by_index(values: torch.Tensor, indices: torch.Tensor, total: int) -> torch.Tensor:
    """Gather per-sample rows computed on different ranks into one tensor ordered by dataset index.

    Each rank passes the rows it computed and their dataset indices. Samples a padded sampler repeated are
    written once; a missing index raises, so no sample is counted twice and none is dropped.
    """
    all_values = all_gather_cat(values)
    all_indices = all_gather_cat(indices.to(values.device))
    out = values.new_zeros((total, *values.shape[1:]))
    seen = torch.zeros(total, dtype=torch.bool, device=values.device)
    out[all_indices] = all_values
    seen[all_indices] = True
    if not bool(seen.all()):
        missing = int((~seen).sum())
        raise RuntimeError(f"distributed feature gather: {missing} of {total} samples were computed by no rank")
    return out


def broadcast_object(obj):
    """Rank 0's Python object on every rank."""
    if not is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch, on every device, with no host sync.

    Batch mean and variance come from two autograd-aware all-reduces (the sums and the count, then the sum of
    squared deviations from the global mean), so the backward pass is exact and the variance does not cancel.
    torch's ``nn.SyncBatchNorm`` (CUDA only) drops ranks with an empty batch through a boolean mask, which makes
    the host wait for the GPU in every BN layer (over 110 times a step for a ResNet-50 with two views); this one
    never reads a device value on the host, so the host can run ahead. The count is summed, not assumed, so
    unequal (even empty) per-rank batches stay exact too. Outside training or without a process group it is
    plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        c = x.shape[1]
        dims = [0, *range(2, x.dim())]  # every dimension but the channels
        shape = [1, c] + [1] * (x.dim() - 2)  # a (C,) statistic broadcast over x
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16/fp16 -> fp32; fp32 and fp64 unchanged
        # Two passes (mean, then the mean of squared deviations), each one autograd-aware all-reduce: the
        # one-pass E[x^2] - E[x]^2 cancels catastrophically in float32 when |mean| >> std (an input offset of
        # 1000 gave a variance error of 0.2). The count is a shape, known on the host: no device read.
        stats = all_reduce_sum(torch.cat([xf.sum(dims), xf.new_full((1,), float(x.numel() // max(c, 1)))]))
        n = stats[-1]  # () the global count, a device tensor
        mean = stats[:c] / n  # (C,)
        centered = xf - mean.view(shape)
        var = all_reduce_sum(centered.square().sum(dims)) / n  # (C,) biased, as normalisation uses
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n)
        y = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """running = (1 - m) running + m batch (the unbiased variance), as BatchNorm does, all on the device."""
        # called only with track_running_stats, which gives BatchNorm these buffers
        assert self.num_batches_tracked is not None and self.running_mean is not None and self.running_var is not None
        self.num_batches_tracked.add_(1)
        m = self._momentum()
        self.running_mean.mul_(1 - m).add_(mean * m)
        self.running_var.mul_(1 - m).add_(var * (n / (n - 1).clamp_min(1)) * m)

    def _momentum(self) -> float | torch.Tensor:
        """The momentum, or with ``momentum=None`` (a cumulative average) 1 / batches seen as a device tensor:
        ``float(num_batches_tracked)`` would be a host sync."""
        if self.momentum is None:
            # called only with track_running_stats (by _update_running_stats), which gives BatchNorm these buffers
            assert self.num_batches_tracked is not None and self.running_mean is not None
            return 1.0 / self.num_batches_tracked.to(self.running_mean.dtype)
        return self.momentum


def convert_sync_batchnorm(module: nn.Module, device_type: str = "cpu") -> nn.Module:
    """Every BatchNorm*d -> our `SyncBatchNorm`, on every device (``device_type`` is accepted for callers, and no
    longer picks torch's ``nn.SyncBatchNorm`` on CUDA: that one syncs the host in every layer). Parameters and
    running statistics are the module's own tensors, so the converted model is on the module's device."""
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        out = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats)
        if module.affine:
            with torch.no_grad():
                out.weight = module.weight
                out.bias = module.bias
        out.running_mean = module.running_mean
        out.running_var = module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, convert_sync_batchnorm(child, device_type))
    return out
