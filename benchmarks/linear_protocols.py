"""The fast linear probe against the paper's linear protocol on the same backbone: accuracy and wall-clock time.

    python benchmarks/linear_protocols.py --checkpoint runs/fashion-mnist --paper-epochs 10

Runs `barlowtwins linear --protocol fast` (features extracted once, a grid of classifiers on them) and
`barlowtwins linear --protocol paper` (frozen backbone, RandomResizedCrop + flip every epoch, SGD, cosine),
then appends both to benchmarks/RESULTS.md with their times. On a CPU the paper protocol is run for fewer epochs
than its 100; the table says how many.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, append_block, machine  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--checkpoint", required=True, help="a run folder (its data set is used) or a weights file")
    p.add_argument("--paper-epochs", type=int, default=100)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further flags for both commands, e.g. --dataset folder --data-dir /data/imagenet")
    p.add_argument("--results", default=str(RESULTS))
    args = p.parse_args(argv)

    from barlowtwins import __version__
    from barlowtwins.cli import main as cli

    out = Path(args.checkpoint) / "eval" if Path(args.checkpoint).is_dir() else Path("results")
    rows = []
    for protocol, flags in (("fast", ["--no-cache"]), ("paper", ["--epochs", str(args.paper_epochs)])):
        target = out / f"protocols-linear-{protocol}.json"
        t0 = time.time()
        code = cli(["linear", "--checkpoint", args.checkpoint, "--protocol", protocol, "--output", str(target),
                    *flags, *args.extra])
        if code != 0:
            return code
        minutes = (time.time() - t0) / 60
        record = json.loads(target.read_text())
        m = record["metrics"]
        if protocol == "fast":
            h = record["hyperparameters"]
            rows.append(["fast (cached features, lr x wd grid)", f"{h['epochs']} over features",
                         f"{m['top1']:.2f}", f"{m['top5']:.2f}", "", f"{minutes:.1f}"])
        else:
            rows.append([f"paper (crop + flip, SGD, cosine; {args.paper_epochs} of 100 epochs)",
                         str(args.paper_epochs), f"{m['last']['top1']:.2f}", f"{m['last']['top5']:.2f}",
                         f"{m['best']['top1']:.2f} (epoch {m['best']['epoch']})", f"{minutes:.1f}"])
    header = (f"Linear protocols on one backbone ({' '.join([args.checkpoint, *args.extra])}), "
              f"{time.strftime('%Y-%m-%d')} — {machine()}; torch {torch.__version__}, barlowtwins {__version__}")
    print(append_block(args.results, header, ["protocol", "epochs", "top-1 (last)", "top-5", "best top-1", "minutes"],
                       rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
