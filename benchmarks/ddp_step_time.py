"""Per-step time of a Barlow Twins training step with 1 and 2 processes (same global batch), with and without
bf16 gradient compression. On a CPU machine the processes share the cores (gloo); on a multi-GPU machine each
takes a GPU (NCCL). Prints a table and appends it to benchmarks/RESULTS.md.

    python benchmarks/ddp_step_time.py                      # CPU: ResNet-18 (width 32), 28 px, batch 128
    python benchmarks/ddp_step_time.py --device cuda --backbone resnet50 --image-size 224 --batch-size 256 \
        --projector 8192-8192-8192
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_block, machine  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args: argparse.Namespace, compress: bool, queue) -> None:
    from barlowtwins.models.barlow_twins import build_model
    from barlowtwins.runtime import distributed as D
    from barlowtwins.runtime.hardware import autocast, autocast_dtype, select_device, usable_cpus
    from barlowtwins.training.optim import LARS, lars_param_groups, set_learning_rates

    cpus = usable_cpus()
    torch.set_num_threads(max(1, cpus // world))
    device = select_device(args.device, rank)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = build_model(args.backbone, args.projector, stem=args.stem, width=args.width).to(device)
    model.to(memory_format=torch.channels_last)
    if world > 1:
        model = D.convert_sync_batchnorm(model, device.type)
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                                    gradient_as_bucket_view=True, static_graph=True)
        if compress:
            from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

            model.register_comm_hook(None, default_hooks.bf16_compress_hook)
    opt = LARS(lars_param_groups(model.module if world > 1 else model))
    amp = autocast_dtype("auto", device)
    n = args.batch_size // world
    x1 = torch.randn(n, 3, args.image_size, args.image_size, device=device)
    x1 = x1.contiguous(memory_format=torch.channels_last)
    x2 = torch.randn_like(x1)
    times = []
    for step in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        set_learning_rates(opt, 0.1)
        with autocast(device, amp):
            loss = model(x1, x2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if world > 1:
            dist.barrier()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        queue.put(statistics.median(times))
    if world > 1:
        dist.destroy_process_group()


def measure(world: int, args, compress: bool = False) -> float:
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(_worker, args=(world, _free_port(), args, compress, queue), nprocs=world, join=True,
                       start_method="spawn")
    return queue.get()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--stem", default="small-pool")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--projector", default="1024-1024-1024")
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--batch-size", type=int, default=128, help="global batch")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)
    if args.width is not None and args.width <= 0:
        args.width = None

    rows = [("1 process", measure(1, args))]
    if args.device.startswith("cuda") and torch.cuda.device_count() < 2:
        # NCCL needs one GPU per process: on a one-GPU machine only the single-process figure is measured.
        print(f"{torch.cuda.device_count()} GPU visible: measuring 1 process only (2 processes need 2 GPUs)")
    else:
        rows += [("2 processes", measure(2, args)),
                 ("2 processes, bf16 gradient compression", measure(2, args, compress=True))]
    header = (f"DDP step time, {args.backbone} (stem {args.stem}, width {args.width}), projector {args.projector}, "
              f"{args.image_size} px, global batch {args.batch_size}, {args.device} — {machine()}; "
              f"torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    block = append_block(args.results, header, ["setup", "median step (ms)", "images/s"],
                         [[name, f"{t * 1000:.0f}", f"{args.batch_size / t:.0f}"] for name, t in rows])
    print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
