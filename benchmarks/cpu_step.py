"""The training step on the CPU by precision, memory format and torch.compile: samples/s and compile time.

Model only: the trainer's network (`build_pretrain_model` of a preset or recipe), LARS and the trainer's own step
(`optimizer_step`) on views made once, so that the data path does not enter the figure. Each variant is built
from the same seed; its first steps (compilation, for torch.compile) are timed apart from the steady state.

    python benchmarks/cpu_step.py                          # the fashion-mnist preset, batch 128 at 28 px
    python benchmarks/cpu_step.py --config images-cpu      # the CPU recipe for a folder of images
    python benchmarks/cpu_step.py --variants fp32 bf16+cl  # some of them

Prints a table and writes benchmarks/results/<stamp>-cpu-step-<config>.json with the machine it ran on (its
CPU flags included); one row per run goes to benchmarks/RESULTS.md. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, RESULTS, append_block, machine  # noqa: E402

from barlowtwins.runtime.hardware import cpu_bf16_feature  # noqa: E402
from barlowtwins.runtime.placement import place_model  # noqa: E402
from barlowtwins.training.autoconfig import CPU_BATCH, CPU_FOLDER_RECIPE  # noqa: E402
from barlowtwins.training.config import PretrainConfig  # noqa: E402
from barlowtwins.training.optim import build_optimizer, set_learning_rates  # noqa: E402
from barlowtwins.training.run import build_pretrain_model  # noqa: E402
from barlowtwins.training.step import optimizer_step  # noqa: E402

VARIANTS = {  # name -> (autocast dtype, channels_last, compile)
    "fp32": (None, False, False),
    "fp32+cl": (None, True, False),
    "bf16": (torch.bfloat16, False, False),
    "bf16+cl": (torch.bfloat16, True, False),
    "fp32+compile": (None, False, True),
    "bf16+cl+compile": (torch.bfloat16, True, True),
}


def config_named(name: str) -> tuple[PretrainConfig, int]:
    """(the config, its views' channels): a preset's, or the CPU recipe for a folder of images."""
    if name == "images-cpu":  # the recipe's fields as a folder of photos gets them on a CPU
        return PretrainConfig(dataset="images", batch_size=CPU_BATCH, **CPU_FOLDER_RECIPE), 3
    cfg = PretrainConfig(preset=name)
    return cfg, 3  # grayscale images are read as 3 equal channels


def measure(cfg: PretrainConfig, channels: int, variant: str, steps: int, first: int, repeats: int) -> dict:
    dtype, channels_last, compile_ = VARIANTS[variant]
    torch.manual_seed(0)
    model = build_pretrain_model(cfg)
    placed = place_model(model, torch.device("cpu"), world=1, channels_last=channels_last, compile=compile_)
    opt = build_optimizer(cfg.optimizer, model, cfg.lr_weights, cfg.lr_biases, cfg.weight_decay, cfg.momentum,
                          cfg.eta)
    set_learning_rates(opt, 0.01)
    g = torch.Generator().manual_seed(0)
    n, s = cfg.batch_size, cfg.image_size
    x1, x2 = (torch.randn(n, channels, s, s, generator=g) for _ in range(2))
    if placed.channels_last:
        x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    device = torch.device("cpu")

    start = time.perf_counter()
    for _ in range(first):  # compilation (torch.compile) and the allocator's first steps
        optimizer_step(placed.called, opt, device, dtype, x1, x2)
    first_seconds = time.perf_counter() - start
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            result = optimizer_step(placed.called, opt, device, dtype, x1, x2)
        float(result.loss.detach())  # one sync at the end of the timed steps
        rates.append(steps * n / (time.perf_counter() - start))
    return {"variant": variant, "samples_per_sec": statistics.median(rates), "rates": rates,
            "first_steps_seconds": first_seconds, "first_steps": first, "channels_last": placed.channels_last,
            "loss": float(result.loss.detach())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="fashion-mnist", help="a preset name or images-cpu (default fashion-mnist)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    p.add_argument("--first", type=int, default=3, help="untimed first steps (compilation)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, channels = config_named(args.config)
    rows = []
    for v in args.variants:
        row = measure(cfg, channels, v, args.steps, args.first, args.repeats)
        rows.append(row)
        print(f"{v:>16}: {row['samples_per_sec']:7.0f} samples/s; first {args.first} steps "
              f"{row['first_steps_seconds']:.1f} s", flush=True)
    base = next((r["samples_per_sec"] for r in rows if r["variant"] == "fp32"), None)
    info = {"machine": machine(), "cpu_bf16": cpu_bf16_feature(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "config": args.config, "batch_size": cfg.batch_size,
            "image_size": cfg.image_size, "width": cfg.width, "backbone": cfg.backbone,
            "projector": cfg.projector, "date": datetime.datetime.now().strftime("%Y%m%d-%H%M%S")}
    cells = [f"{r['samples_per_sec']:.0f}" + (f" ({r['samples_per_sec'] / base:.2f}x)" if base else "")
             for r in rows]
    titles = [r["variant"] for r in rows]
    block = append_block(RESULTS, f"CPU training step by precision: {args.config}, batch {cfg.batch_size} at "
                         f"{cfg.image_size} px, samples/s ({info['machine']}, {info['threads']} threads, bf16: "
                         f"{info['cpu_bf16']}, torch {torch.__version__}, {info['date']})", titles, [cells])
    print(block)
    compiled = [r for r in rows if r["variant"].endswith("compile")]
    for r in compiled:
        print(f"{r['variant']}: first {r['first_steps']} steps took {r['first_steps_seconds']:.1f} s (compilation)")
    out = HERE / "results" / f"{info['date']}-cpu-step-{args.config}.json"
    out.write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
