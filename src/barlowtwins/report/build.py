"""`build_report`: the HTML page of one or more run folders and its figures (see `barlowtwins.report`)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from barlowtwins.data.bad_files import summary_line
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.report import plots
from barlowtwins.report.diagnostics import run_diagnostics
from barlowtwins.report.html import RESULTS_HEAD, figure, note, page, result_rows, table
from barlowtwins.report.runs import load_run
from barlowtwins.runtime.files import check_writable, write_bytes_atomic, write_text_atomic

ASSETS_MARKER = ".barlowtwins-report"


@dataclass
class ReportResult:
    html: Path
    figures: dict[str, Path] = field(default_factory=dict)  # figure id -> PNG file
    notes: list[str] = field(default_factory=list)  # what could not be shown, and why
    diagnostics: list = field(default_factory=list)  # a Diagnostics (or None) per run


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    if len(slug) > 80:  # a figure's file name stays far below the file system's 255 bytes
        slug = slug[:80] + "-" + hashlib.sha256(name.encode()).hexdigest()[:8]
    return slug


def asset_folder(output: str | Path) -> Path:
    """Where the PNG files of the page ``output`` go: ``<stem>_files/`` beside it."""
    output = Path(output)
    return output.with_name(output.stem + "_files")


def _claim_assets(files: Path) -> list[str] | None:
    """The figure files the previous report listed in ``files`` (None: the folder does not exist yet); a one-line
    `ConfigError` when the folder is not the report's to write into (see the module docstring)."""
    flag = "--output"
    if files.is_symlink():
        raise ConfigError(f"{files} is a symbolic link; the report writes its figures only into a folder of its "
                          f"own, never through a link: choose another {flag}")
    if not files.exists():
        return None
    if not files.is_dir():
        raise ConfigError(f"{files} exists and is not a folder; choose another {flag}")
    marker = files / ASSETS_MARKER
    if not marker.is_file() or marker.is_symlink():
        if any(files.iterdir()):
            raise ConfigError(f"{files} exists and was not made by barlowtwins report (it has no {ASSETS_MARKER} "
                              f"file), so nothing in it is overwritten or deleted; choose another {flag}, or "
                              "remove that folder")
        return []
    try:
        listed = json.loads(marker.read_text()).get("figures", [])
    except (OSError, ValueError, AttributeError):
        listed = []  # an unreadable mark: keep every file
    return [n for n in listed if isinstance(n, str) and n.endswith(".png") and n == os.path.basename(n)]


def _mark(files: Path, figures: list[str]) -> None:
    write_text_atomic(files / ASSETS_MARKER, json.dumps(
        {"written_by": "barlowtwins report", "figures": sorted(figures)}, indent=1) + "\n")


HELD_OUT = ("test", "val", "validation")


def describe_images(diags) -> str:
    """What the diagnostics saw, in words true to the data: held-out only for a held-out split."""
    parts = []
    for d in diags:
        if d is None:
            continue
        split = str(d.split or "")
        held_out = split.split(" ")[0] in HELD_OUT  # "val", or "val of DIR" / "val (online kNN data)"
        words = plots.images_phrase(d.samples, split)
        parts.append(f"{words} (held-out)" if held_out else f"{words}, training data")
    return "; ".join(dict.fromkeys(parts)) or "the run's images"


def build_report(run_dirs: list[str | Path], output: str | Path, *, diagnostics: bool = True, samples: int = 512,
                 device: str = "cpu", map_method: str = "auto", title: str | None = None,
                 strict_data: bool = False, labels_dir: str | None = None) -> ReportResult:
    """Write ``output`` (HTML) and ``<output stem>_files/*.png``; return what was written.

    One-line errors before any work: an output that cannot be written, a ``_files`` folder that is not the
    report's own (see the module docstring), a folder that is not a run."""
    plots.require_matplotlib()
    output = Path(output)
    check_writable(output, "--output")
    files = asset_folder(output)
    previous = _claim_assets(files)
    check_writable(files / ASSETS_MARKER, "--output")
    runs = [load_run(p) for p in run_dirs]
    names = [r.name for r in runs]
    for i, r in enumerate(runs):  # two folders with the same name: tell them apart
        if names.count(r.name) > 1:
            r.name = f"{r.name} ({i + 1})"
    if previous is None or not (files / ASSETS_MARKER).is_file():
        files.mkdir(parents=True, exist_ok=True)
        _mark(files, previous or [])  # ours from now on, even if the report stops half-way
    result = ReportResult(html=output)
    for r in runs:
        result.notes += [f"{r.name}: {n}" for n in r.notes]
    read_notes = [note(n) for n in result.notes]

    diags = []
    for r in runs:
        d = None
        if diagnostics:
            try:
                d = run_diagnostics(r.path, samples=samples, device=device, map_method=map_method,
                                    strict_data=strict_data, labels_dir=labels_dir)
            except Exception as e:  # noqa: BLE001 - the page is still useful without them; say why
                if strict_data and isinstance(e, DataError):  # --strict-data: as in every command, an error
                    raise
                result.notes.append(f"{r.name}: collapse diagnostics skipped ({str(e).splitlines()[0][:300]})")
            if d is not None and d.skipped:
                result.notes.append(f"{r.name}: {summary_line(d.skipped)}")
        diags.append(d)
    result.diagnostics = diags

    def fig(fig_id: str, f, caption: str) -> str:
        png = plots.png_bytes(f)
        path = files / f"{fig_id}.png"
        write_bytes_atomic(path, png)
        result.figures[fig_id] = path
        return figure(fig_id, png, caption)

    points = min((len(r.series("loss")[1]) for r in runs if r.series("loss")[1]), default=0)
    few = (f" Only {points} logged point(s) per curve: the run logged every --log-every steps; a lower "
           "--log-every draws finer curves." if 0 < points < 5 else "")
    seen = describe_images(diags)

    def section(items) -> list[str]:
        parts = []
        for fig_id, f, caption, missing in items:
            if f is not None:
                parts.append(fig(fig_id, f, caption))
            elif missing:
                parts.append(note(missing))
                result.notes.append(missing)
        return parts

    training = read_notes + section([
        ("loss", plots.loss_figure(runs), "Loss and its two terms per log window (log scale). Thousands at the "
         "start is normal: with D embedding dimensions the on-diagonal term starts near D and the off-diagonal "
         "sum near D²/N." + few, "no step records in metrics.jsonl yet"),
        ("lr", plots.lr_figure(runs), "Learning rate of the weights: dots are the logged "
         "values, the line the schedule at every step (linear warm-up, then cosine)." + few, None),
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
        ("spectrum", plots.spectrum_figure(runs, diags), f"Singular values of the centred embeddings and features of "
         f"{seen}, normalised by the largest. A collapsed run drops by orders of magnitude after a few "
         "dimensions; RankMe (effective rank) counts the directions used. With N images and D > N dimensions "
         "there are at most N − 1 directions: the dotted line marks N, and the drop there is not collapse.", None),
        ("std", plots.std_figure(runs, diags), "Per-dimension standard deviation after L2 normalisation: near 0 "
         "means collapse; spread embeddings sit near 1/√D.", None),
    ])
    for r, d in zip(runs, diags):
        collapse += section([(f"map-{_slug(r.name)}", plots.map_figure(r, d),
                              f"2-D map of the backbone features of {describe_images([d])} "
                              + ("(coloured by label)." if d is not None and d.labels is not None
                                 else "(no labels known for these images, so one colour)."),
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
    written = [p.name for p in result.figures.values()]
    for name in set(previous or []) - set(written):  # our own figures of the previous report, no longer drawn
        stale = files / name
        if stale.is_file() and not stale.is_symlink():
            stale.unlink()
    _mark(files, written)
    return result
