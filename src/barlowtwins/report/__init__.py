"""`barlowtwins report`: one self-contained HTML page (and the PNGs) from one or more run folders.

    >>> from barlowtwins.report import build_report
    >>> result = build_report(["runs/fashion-mnist"], "report.html")
    >>> result.figures          # {"loss": Path("report_files/loss.png"), ...}

Needs matplotlib (``pip install 'barlowtwins[report]'``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from barlowtwins.report import plots
from barlowtwins.report.diagnostics import run_diagnostics
from barlowtwins.report.html import RESULTS_HEAD, figure, note, page, result_rows, table
from barlowtwins.report.runs import RunData, load_run
from barlowtwins.runtime.files import write_bytes_atomic, write_text_atomic

__all__ = ["ReportResult", "build_report", "load_run", "RunData"]


@dataclass
class ReportResult:
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)  # figure id -> PNG file
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why
    diagnostics: list = field(default_factory=list)  # a Diagnostics (or None) per run


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def build_report(run_dirs: list[str | Path], output: str | Path, *, diagnostics: bool = True, samples: int = 512,
                 device: str = "cpu", map_method: str = "auto", title: str | None = None) -> ReportResult:
    """Write ``output`` (HTML) and ``<output stem>_files/*.png``; return what was written."""
    plots.require_matplotlib()
    runs = [load_run(p) for p in run_dirs]  # one-line errors before any work
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # two folders with the same name: tell them apart
        if names.count(r.name) > 1:
            r.name = f"{r.name} ({i + 1})"
    output = Path(output)
    files = output.with_name(output.stem + "_files")
    files.mkdir(parents=True, exist_ok=True)
    result = ReportResult(html=output)

    diags = []
    for r in runs:
        d = None
        if diagnostics:
            try:
                d = run_diagnostics(r.path, samples=samples, device=device, map_method=map_method)
            except Exception as e:  # noqa: BLE001 - the page is still useful without them; say why
                result.notes.append(f"{r.name}: collapse diagnostics skipped ({str(e).splitlines()[0][:300]})")
        diags.append(d)
    result.diagnostics = diags

    def fig(fig_id: str, f, caption: str) -> str:
        png = plots.png_bytes(f)
        path = files / f"{fig_id}.png"
        write_bytes_atomic(path, png)
        result.figures[fig_id] = path
        return figure(fig_id, png, caption)

    def section(items) -> list[str]:
        parts = []
        for fig_id, f, caption, missing in items:
            if f is not None:
                parts.append(fig(fig_id, f, caption))
            elif missing:
                parts.append(note(missing))
                result.notes.append(missing)
        return parts

    training = section([
        ("loss", plots.loss_figure(runs), "Loss and its two terms per log window (log scale). Thousands at the "
         "start is normal: with D embedding dimensions the on-diagonal term starts near D and the off-diagonal "
         "sum near D²/N.", "no step records in metrics.jsonl yet"),
        ("lr", plots.lr_figure(runs), "Learning rate of the weights: warm-up then cosine.", None),
        ("throughput", plots.throughput_figure(runs), "Images per second over all processes.", None),
        ("data_wait", plots.data_wait_figure(runs), "Host time spent waiting for the next batch, as a share of each "
         "log window. Near 0: data is always ready. High: the data pipeline limits the speed (more --workers, "
         "faster storage, smaller images on disk).",
         "no data-wait record (runs made before it was logged)"),
        ("knn", plots.knn_figure(runs), "Online kNN top-1 on labelled data.",
         "no online kNN logged (pretrain with --knn-every N and labelled data to get this curve)"),
    ])
    correlation = section([("identity", plots.identity_figure(runs), "Mean diagonal and RMS off-diagonal of the "
                            "C snapshots: the loss pulls them towards 1 and 0.",
                            "no C snapshots (correlation.jsonl) in these runs")])
    for r in runs:
        correlation += section([(f"correlation-{_slug(r.name)}", plots.correlation_figure(r),
                                 "Blue −1, white 0, red +1: a good run approaches the identity.", None)])
    collapse = section([
        ("spectrum", plots.spectrum_figure(runs, diags), "Singular values of the centred held-out embeddings and "
         "features, normalised by the largest. A collapsed run drops by orders of magnitude after a few "
         "dimensions; RankMe (effective rank) counts the directions used.", None),
        ("std", plots.std_figure(runs, diags), "Per-dimension standard deviation after L2 normalisation: near 0 "
         "means collapse; spread embeddings sit near 1/√D.", None),
    ])
    for r, d in zip(runs, diags):
        collapse += section([(f"map-{_slug(r.name)}", plots.map_figure(r, d),
                              "2-D map of held-out backbone features (coloured by label when the data has labels).",
                              None)])
    if not any(diags):
        collapse.append(note("collapse diagnostics need the run's checkpoint and data: "
                             + "; ".join(n for n in result.notes if "diagnostics" in n)))
    else:
        rows = [[r.name, d.weights, d.samples, d.split, f"{d.rankme_embeddings:.1f}" if d.rankme_embeddings else "",
                 f"{d.erank_embeddings:.1f}" if d.erank_embeddings else "", f"{d.rankme_features:.1f}",
                 f"{d.erank_features:.1f}", d.map_method] for r, d in zip(runs, diags) if d is not None]
        collapse.insert(0, table(["run", "weights", "images", "split", "RankMe embeddings", "erank embeddings",
                                  "RankMe features", "erank features", "2-D map"], rows))
    rows = result_rows(runs)
    results = [table(RESULTS_HEAD, rows)] if rows else [note(
        "no evaluation results in these folders (run barlowtwins knn / linear / finetune / transfer with "
        "--checkpoint RUN_DIR)")]
    sections = [("Training", training), ("Cross-correlation matrix", correlation),
                ("Collapse diagnostics", collapse), ("Evaluation results", results)]
    text = page(title or "Barlow Twins run report: " + ", ".join(r.name for r in runs), runs, diags, sections)
    write_text_atomic(output, text)
    for f in files.glob("*.png"):  # no stale figures from an earlier report in the folder
        if f not in result.figures.values():
            f.unlink()
    return result
