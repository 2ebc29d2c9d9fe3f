"""One self-contained HTML page: figures embedded as base64 PNGs, tables, and notes on what is missing."""

from __future__ import annotations

import base64
import datetime
import html
import statistics

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 1250px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 8px 0; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; } th { background: #f2f2f2; }
figure { margin: 12px 0; } img { max-width: 100%; } figcaption { color: #555; font-size: 0.9em; }
.note { color: #7a5a00; background: #fff8e0; padding: 4px 8px; border-left: 3px solid #e0b000; }
"""


def esc(x) -> str:
    return html.escape("" if x is None else str(x))


def table(head: list[str], rows: list[list]) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(out + ["</table>"])


def figure(fig_id: str, png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure id="{esc(fig_id)}"><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return ""
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def summary_rows(runs, diags) -> list[list]:
    rows = []
    for r, d in zip(runs, diags):
        c = r.config
        last = r.steps[-1] if r.steps else {}
        total = next((e.get("total_steps") for e in reversed(r.events) if e.get("total_steps")), None)
        ips = [s["images_per_sec"] for s in r.steps[1:] or r.steps if "images_per_sec" in s]
        wait = [s["data_wait_share"] for s in r.steps if "data_wait_share" in s]
        done = any(e.get("event") == "done" for e in r.events)
        rows.append([r.name, c.get("backbone"), c.get("projector"), c.get("batch_size"), c.get("image_size"),
                     f"{last.get('step', 0)} / {total or '?'}" + (" (done)" if done else ""),
                     _fmt(last.get("epoch")), _fmt(last.get("loss"), 1),
                     _fmt(statistics.median(ips), 0) if ips else "",
                     f"{100 * statistics.median(wait):.1f}%" if wait else "",
                     _fmt(d.rankme_embeddings, 1) if d else "", _fmt(d.rankme_features, 1) if d else ""])
    return rows


SUMMARY_HEAD = ["run", "backbone", "projector", "batch", "px", "steps", "epoch", "last loss", "median img/s",
                "median data wait", "RankMe embeddings", "RankMe features"]
RESULTS_HEAD = ["run", "protocol", "dataset", "split", "setting", "top-1", "top-5", "mAP", "file"]


def _has_random_flag(rec) -> bool:
    if isinstance(rec, dict):
        return rec.get("random_init") is True or any(_has_random_flag(v) for v in rec.values())
    return False


def is_random_init(path, rec: dict) -> bool:
    """A result of the random-init baseline: ``*-random.json`` (``--compare-random``), or flagged inside."""
    return path.stem.endswith("-random") or path.stem == "random" or _has_random_flag(rec)


def result_rows(runs) -> list[list]:
    rows = []
    for r in runs:
        for path, rec in r.results:
            name = f"{r.name} (random init)" if is_random_init(path, rec) else r.name
            metrics = rec.get("metrics", {})
            groups = {k: v for k, v in metrics.items() if isinstance(v, dict)} or {"": metrics}
            for setting, m in groups.items():
                rows.append([name, rec.get("protocol"), rec.get("dataset"), rec.get("split"), setting,
                             _fmt(m.get("top1")), _fmt(m.get("top5")), _fmt(m.get("mAP")),
                             str(path.relative_to(r.path)) if path.is_relative_to(r.path) else str(path)])
    return rows


def page(title: str, runs, diags, sections: list[tuple[str, list[str]]]) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    body = [f"<h1>{esc(title)}</h1>",
            f"<p>{len(runs)} run(s): {esc(', '.join(str(r.path) for r in runs))}. Generated {stamp} by "
            "<code>barlowtwins report</code>.</p>",
            "<h2>Summary</h2>", table(SUMMARY_HEAD, summary_rows(runs, diags))]
    for heading, parts in sections:
        body.append(f"<h2>{esc(heading)}</h2>")
        body += parts
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")
