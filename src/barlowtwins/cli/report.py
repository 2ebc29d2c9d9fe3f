"""``barlowtwins report``: an HTML page of plots (loss, C heat maps, collapse diagnostics) for run folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from barlowtwins.cli.common import add_strict_data_arg
from barlowtwins.errors import ConfigError
from barlowtwins.report import build_report
from barlowtwins.report.plots import require_matplotlib


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="write an HTML report of one or more runs",
                       description="Write one self-contained HTML page (PNG figures embedded, and also saved in "
                                   "<output>_files/, a folder the report makes and marks itself: an existing one it "
                                   "did not make, or a symbolic link, is refused and left untouched): loss and its "
                                   "on- and off-diagonal terms, learning rate, "
                                   "throughput, data-wait share, online kNN; the cross-correlation matrix C at "
                                   "several points of the run; collapse diagnostics on held-out images (singular "
                                   "values, RankMe, per-dimension std, a 2-D map of the features); every "
                                   "evaluation result in the folders. Several runs are overlaid. Needs matplotlib: "
                                   "pip install 'barlowtwins[report]'.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="pretraining run folders (their --out)")
    p.add_argument("--output", default=None, metavar="FILE",
                   help="HTML file to write, checked before any work (default: RUN_DIR/report.html for one run, "
                        "report.html for several)")
    p.add_argument("--samples", type=int, default=512, help="held-out images for the collapse diagnostics")
    p.add_argument("--no-diagnostics", action="store_true",
                   help="skip the collapse diagnostics (they load the checkpoint and data)")
    p.add_argument("--map", choices=("auto", "umap", "tsne", "pca"), default="auto",
                   help="2-D map method (auto: UMAP if installed, else t-SNE, else PCA)")
    p.add_argument("--device", default="cpu", help="device for the diagnostics: cpu, cuda, mps or auto")
    p.add_argument("--labels", default=None, metavar="DIR",
                   help="a labelled folder (DIR/train/<class>/..., DIR/val/<class>/...) whose images the diagnostics "
                        "measure, so the 2-D map is coloured by class (default: the run's online-kNN data, else "
                        "its own labelled split, else its images)")
    add_strict_data_arg(p)
    return p


def run(args: argparse.Namespace) -> int:
    require_matplotlib()  # one line and exit 2 before any work when the extra is missing
    if args.samples < 2:
        raise ConfigError(f"--samples must be at least 2, got {args.samples}")
    output = args.output or (str(Path(args.runs[0]) / "report.html") if len(args.runs) == 1 else "report.html")
    res = build_report(args.runs, output, diagnostics=not args.no_diagnostics, samples=args.samples,
                       device=args.device, map_method=args.map, strict_data=args.strict_data,
                       labels_dir=args.labels)
    for n in res.notes:
        print(f"note: {n}")
    print(f"wrote {res.html} ({len(res.figures)} figures, also in {res.html.with_name(res.html.stem + '_files')}/)")
    return 0
