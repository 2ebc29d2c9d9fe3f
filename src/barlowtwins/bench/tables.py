"""A bench result as people read it: the console table, the RESULTS.md row, the JSON file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from barlowtwins.bench.run import BenchResult
from barlowtwins.runtime.files import write_text_atomic


def table(result: BenchResult) -> str:
    """The printed summary: one line per measurement (a failed or pending one says so), the ratios, the errors."""
    m = result.model_only
    model = m.get("samples_per_sec")
    notes = (f"{_num(m.get('tflops'), '.3f')} TFLOP/s, MFU {_pct(m.get('mfu'))}, "
             f"{_num(m.get('gflop_per_sample'), '.2f')} GFLOP/sample")
    lines = [f"{'measurement':38s} {'samples/s':>10s}  notes",
             f"{'model only (synthetic device tensors)':38s} {_cell(result, 'model only', model):>10s}  {notes}"]
    for key in _keys(result):
        lines.append(f"{'data path ' + key + ' (no model)':38s} "
                     f"{_cell(result, 'data path ' + key, result.data_only.get(key)):>10s}")
        e2e = result.end_to_end.get(key)
        share = f"{e2e / model:.2f} of model only" if e2e and model else ""
        lines.append(f"{'end to end, ' + key:38s} {_cell(result, 'end to end ' + key, e2e):>10s}  {share}".rstrip())
    official = "official PIL pipeline"
    if result.official_pil is not None or official in result.errors or official in result.pending:
        lines.append(f"{'official PIL pipeline (no model)':38s} "
                     f"{_cell(result, official, result.official_pil):>10s}")
        for key, rate in result.data_only.items():
            if result.official_pil:
                lines.append(f"{'  ratio ' + key + ' / official':38s} {rate / result.official_pil:10.2f}x")
    keys = [k for k in _keys(result) if k in result.data_only]
    for key in keys[1:]:
        lines.append(f"{'  ratio ' + key + ' / ' + keys[0]:38s} "
                     f"{result.data_only[key] / result.data_only[keys[0]]:10.2f}x")
    mem_key = next(k for k in m if k.endswith("_gib"))
    lines.append(f"peak memory ({mem_key.replace('_gib', '').replace('_', ' ')}): {m[mem_key]:.2f} GiB")
    lines += [f"failed: {name}: {why}" for name, why in result.errors.items()]
    return "\n".join(lines)


def _keys(result: BenchResult) -> list[str]:
    """The data-path rows: ``paths``, or (a result made by hand) the keys of the figures."""
    return result.paths or list(dict.fromkeys([*result.data_only, *result.end_to_end]))


def _cell(result: BenchResult, name: str, value: float | None, spec: str = ".1f") -> str:
    """A figure, or why there is none: failed, not run yet."""
    if value is not None:
        return format(value, spec)
    return "failed" if name in result.errors else "not run" if name in result.pending else "n/a"


def _num(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


RESULTS_HEADER = ("| date | device | torch / torchvision | backbone | size | batch | workers | model only | "
                  "data path (alone / end to end) | official PIL | TFLOP/s | MFU | peak mem GiB |\n"
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def results_row(result: BenchResult) -> str:
    """One Markdown row for ``benchmarks/RESULTS.md`` (samples/s are two-view samples per second); a figure
    that failed or is still to come says so."""
    s, e, m = result.spec, result.environment, result.model_only
    paths = "; ".join(f"{k} {_cell(result, 'data path ' + k, result.data_only.get(k))} / "
                      f"{_cell(result, 'end to end ' + k, result.end_to_end.get(k))}" for k in _keys(result))
    mem = next(v for k, v in m.items() if k.endswith("_gib"))
    official = _cell(result, "official PIL pipeline", result.official_pil)
    official = "" if official == "n/a" else official  # not asked for
    net = s["backbone"] + (f" width {s['width']}" if s.get("width") else "")
    net += f", {s['stem']} stem" if s.get("stem", "standard") != "standard" else ""
    net += f", projector {s['projector']}" if s.get("projector") else ""
    return (f"| {e['date']} | {e['device']} | {e['torch']} / {e['torchvision']} | {net} | "
            f"{s['image_size']} | {s['batch_size']} | {s['workers']} | "
            f"{_cell(result, 'model only', m.get('samples_per_sec'))} | {paths} | "
            f"{official} | {_num(m.get('tflops'), '.3f')} | {_pct(m.get('mfu'))} | {mem:.2f} |")


def append_results(path: str | os.PathLike, result: BenchResult, replace: str | None = None) -> str:
    """Append the row under a ``## barlowtwins bench`` table (created at the end of the file if missing); with
    ``replace`` (the row an earlier call returned) that row is rewritten in place instead, so a result saved
    after every measurement stays one row. Returns the row written."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    title = "## `barlowtwins bench`: throughput (two-view samples/s)"
    if title not in text:
        text = text.rstrip("\n") + f"\n\n{title}\n\n{RESULTS_HEADER}\n"
    lines = text.rstrip("\n").split("\n")
    at = lines.index(title) + 1
    while at < len(lines) and not lines[at].startswith("|"):
        at += 1
    first = at
    while at < len(lines) and lines[at].startswith("|"):  # the end of this table, even if sections follow
        at += 1
    row = results_row(result)
    mine = [i for i in range(first, at) if replace is not None and lines[i] == replace]
    if mine:
        lines[mine[-1]] = row
    else:
        lines.insert(at, row)
    write_text_atomic(path, "\n".join(lines) + "\n")
    return row


def save_json(path: str | os.PathLike, result: BenchResult) -> None:
    write_text_atomic(path, json.dumps(result.to_dict(), indent=2) + "\n")
