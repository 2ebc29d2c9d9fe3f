"""Your own photos on a CPU: does the plain command learn something in a short budget?

For each seed, exactly what a new user types (no preset, no tuning flags), on a folder of photo-like scenes
(`photo_scenes.py`: five object classes on random backgrounds, 300-600 px JPEGs):

    barlowtwins pretrain --dataset images --data-dir <set>/train --time-budget-minutes M --seed S --out <run>

then, on the labelled copy (train split as the reference set, val split as queries), the weighted kNN
(k = 20, 200) and the fast linear probe of the pretrained backbone and of the same network at random
initialisation (`--random-init`, the same architecture read from the run folder).

    python benchmarks/own_photos.py --minutes 10 --seeds 0 1 2            # the README's figures
    python benchmarks/own_photos.py --minutes 2 --seeds 0 --extra --width 32   # screening a variant

Appends a table to benchmarks/RESULTS.md (machine, date, versions, mean ± std over seeds) and writes every
figure to benchmarks/results/<stamp>-own-photos.json. Run it alone on the machine: a time budget buys fewer
steps when other jobs share the cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, RESULTS, append_block, machine  # noqa: E402
from photo_scenes import KINDS, write_set  # noqa: E402

import barlowtwins  # noqa: E402


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    print("$", " ".join(cmd), flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return done


def evaluate(run_dir: Path, data: Path, random_init: bool, out: Path) -> dict:
    """kNN (k=20, 200) and the fast linear probe on <data>/val with <data>/train as the reference set."""
    common = ["--checkpoint", str(run_dir), "--dataset", "folder", "--data-dir", str(data), "--val-split", "val",
              "--no-cache", "--device", "cpu"] + (["--random-init"] if random_init else [])
    tag = "random" if random_init else "pretrained"
    run(["barlowtwins", "knn", *common, "--output", str(out / f"knn-{tag}.json")])
    run(["barlowtwins", "linear", *common, "--protocol", "fast", "--output", str(out / f"linear-{tag}.json")])
    knn = json.loads((out / f"knn-{tag}.json").read_text())["metrics"]
    lin = json.loads((out / f"linear-{tag}.json").read_text())["metrics"]
    return {"knn20_top1": knn["k=20"]["top1"], "knn200_top1": knn["k=200"]["top1"], "linear_top1": lin["top1"]}


def one_seed(seed: int, args, data: Path, work: Path) -> dict:
    run_dir = work / f"seed{seed}"
    cmd = ["barlowtwins", "pretrain", "--dataset", "images", "--data-dir", str(data / "train"),
           "--time-budget-minutes", str(args.minutes), "--seed", str(seed), "--out", str(run_dir), "--no-progress",
           *args.extra]
    t0 = time.time()
    done = run(cmd)
    minutes = (time.time() - t0) / 60
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("no preset", "plan:", "warning"))]
    ckpt = torch.load(run_dir / "checkpoint.pth", map_location="cpu", weights_only=True)
    record = {"seed": seed, "pretrain_minutes": minutes, "steps": ckpt["step"],
              "epochs": ckpt["step"] / ckpt["steps_per_epoch"], "plan": lines, "config": ckpt["config"]}
    record["pretrained"] = evaluate(run_dir, data, False, run_dir)
    record["random_init"] = evaluate(run_dir, data, True, run_dir)
    print(json.dumps({k: v for k, v in record.items() if k != "config"}), flush=True)
    return record


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--data", default="data/photo-scenes", help="the scene set (made here when missing)")
    p.add_argument("--train", type=int, default=200, help="training images per class, when the set is made")
    p.add_argument("--val", type=int, default=60, help="evaluation images per class, when the set is made")
    p.add_argument("--kind", choices=tuple(KINDS), default="subjects", help="the kind of scene set, when made")
    p.add_argument("--work", default="runs/bench-own-photos")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further pretrain flags (a variant: everything after --extra)")
    args = p.parse_args()
    data = Path(args.data)
    if not (data / "train").is_dir():
        write_set(data, args.train, args.val, seed=0, kind=args.kind)
    work = Path(args.work)
    runs = [one_seed(s, args, data, work) for s in args.seeds]

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = HERE / "results" / f"{stamp}-own-photos.json"
    out.parent.mkdir(exist_ok=True)
    n_train = sum(1 for _ in (data / "train").rglob("*.jpg"))
    n_val = sum(1 for _ in (data / "val").rglob("*.jpg"))
    classes = sorted(p.name for p in (data / "train").iterdir() if p.is_dir())
    meta = {"machine": machine(), "date": stamp, "barlowtwins": barlowtwins.__version__, "torch": torch.__version__,
            "minutes": args.minutes, "extra": args.extra, "set": str(data), "train_images": n_train,
            "val_images": n_val,
            "classes": classes, "runs": runs}
    out.write_text(json.dumps(meta, indent=1))
    rows = []
    for which in ("pretrained", "random_init"):
        rows.append([f"{which.replace('_', ' ')}" + (f" ({' '.join(args.extra)})" if args.extra else ""),
                     str(len(runs)), mean_std([r[which]["knn20_top1"] for r in runs]),
                     mean_std([r[which]["knn200_top1"] for r in runs]),
                     mean_std([r[which]["linear_top1"] for r in runs]),
                     mean_std([r["steps"] for r in runs]) if which == "pretrained" else "",
                     mean_std([r["epochs"] for r in runs]) if which == "pretrained" else ""])
    gain = [r["pretrained"]["knn20_top1"] - r["random_init"]["knn20_top1"] for r in runs]
    header = (f"Your own photos on a CPU: `pretrain --dataset images --time-budget-minutes {args.minutes:g}` "
              f"({stamp}, {machine()}, torch {torch.__version__}, {n_train} train / {n_val} val scenes, "
              f"{len(classes)} classes ({', '.join(classes)}), chance {100 / len(classes):.0f}%; "
              "kNN k=20 gain over random init "
              f"{mean_std(gain)} points)")
    block = append_block(RESULTS, header, ["network", "seeds", "kNN k=20", "kNN k=200", "linear (fast)", "steps",
                                           "epochs"], rows)
    print(block)
    print(f"figures: {out}")


if __name__ == "__main__":
    main()
