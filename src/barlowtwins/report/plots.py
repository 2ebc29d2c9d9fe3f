"""The report's figures, drawn with matplotlib's object API (no pyplot state, no display needed).

Each function takes the runs (and diagnostics) and returns a `Figure`, or None when there is nothing to draw.
Several runs are overlaid in one colour each, labelled by folder name.
"""

from __future__ import annotations

import io

import numpy as np

from barlowtwins.errors import ConfigError
from barlowtwins.training.optim import warmup_cosine


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError("the report needs matplotlib: pip install 'barlowtwins[report]'") from None


def _figure(width: float = 7.0, height: float = 3.6, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def png_bytes(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _colour(i: int) -> str:
    return f"C{i % 10}"


def loss_figure(runs):
    if not any(r.steps for r in runs):
        return None
    # a panel per extra term a run logged: the Mixed Barlow Twins regulariser R, multi-crop's small-crop term
    extra = [(key, title) for key, title in (("mix", "Mixed BT regulariser R (before w · λ)"),
                                             ("crops", "multi-crop term: small crops vs views (before w)"))
             if any(r.series(key)[1] for r in runs)]
    axes = _figure(4 * (3 + len(extra)), 3.6, 3 + len(extra))
    a, b, c = axes[1][:3]
    keys = ((a, "loss"), (b, "on_diag"), (c, "off_diag")) + tuple((ax, k) for ax, (k, _) in zip(axes[1][3:], extra))
    for i, r in enumerate(runs):
        for ax, key in keys:
            x, y = r.series(key)
            if y:
                ax.plot(x, y, color=_colour(i), label=r.name, lw=1.2)
    names = [k for k, _ in extra]
    a.set_title("loss = on-diagonal + λ · off-diagonal" + (" + w · λ · R" if "mix" in names else "")
                + (" + w · crops" if "crops" in names else ""))
    b.set_title("on-diagonal: Σ (1 − C_ii)²")
    c.set_title("off-diagonal: Σ C_ij² (before λ)")
    for ax, (_, title) in zip(axes[1][3:], extra):
        ax.set_title(title)
    fig = axes[0]
    for ax, _ in keys:
        ax.set_xlabel("epoch")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    a.legend(fontsize=8)
    return fig


def _single(runs, key: str, title: str, ylabel: str, percent: bool = False, **style):
    if not any(r.series(key)[1] for r in runs):
        return None
    fig, (ax,) = _figure()
    for i, r in enumerate(runs):
        x, y = r.series(key)
        if y:
            ax.plot(x, [100 * v for v in y] if percent else y, color=_colour(i), label=r.name, lw=1.2,
                    **style)
    ax.set_title(title)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def schedule_curve(run) -> tuple[list[float], list[float]] | None:
    """The learning rate of every step, from the run's warm-up/cosine schedule scaled to its logged rates (epochs,
    rates); None when the run does not say its length, or no logged rate fixes the scale."""
    total = next((e.get("total_steps") for e in reversed(run.events) if e.get("total_steps")), None)
    spe = run.steps_per_epoch
    if not total or not spe:
        return None
    warm = next((e.get("warmup_steps") for e in reversed(run.events) if e.get("warmup_steps") is not None), None)
    if warm is None:
        warm = round(float(run.config.get("warmup_epochs") or 0) * spe)
    scales = [r["lr_weights"] / m for r in run.steps if isinstance(r.get("lr_weights"), (int, float))
              and isinstance(r.get("step"), int) and (m := warmup_cosine(r["step"] - 1, total, warm)) > 0]
    if not scales:
        return None
    base = float(np.median(scales))
    steps = range(int(total))
    return [(s + 1) / spe for s in steps], [base * warmup_cosine(s, total, warm) for s in steps]


def lr_figure(runs):
    """Logged rates as points, and the schedule of every step as a line, so warm-up and cosine show however few
    records the run logged."""
    fig = _single(runs, "lr_weights", "learning rate (weights; biases and BN follow the same schedule)", "lr",
                  marker="o", ls="none")
    if fig is None:
        return None
    ax = fig.axes[0]
    for i, r in enumerate(runs):
        curve = schedule_curve(r)
        if curve is not None:
            ax.plot(*curve, color=_colour(i), lw=1.0, label=f"{r.name}: schedule, every step")
    ax.legend(fontsize=8)
    return fig


def throughput_figure(runs):
    return _single(runs, "images_per_sec", "throughput", "images / s (all processes)")


def data_wait_figure(runs):
    return _single(runs, "data_wait_share", "share of time waiting for the next batch (host side)", "%",
                   percent=True)


MARKERS = ("o", "s", "^", "D", "v", "P")


def knn_figure(runs):
    if not any(r.knn for r in runs):
        return None
    fig, (ax,) = _figure()
    for i, r in enumerate(runs):
        keys = sorted({k for e in r.knn for k in e if k.startswith("knn_") and k.endswith("top1")})
        for j, k in enumerate(keys):
            pts = [(e["epoch"], e[k]) for e in r.knn if k in e]
            # one colour per run; within a run each k has its own marker and line style (one run: its own colour)
            ax.plot(*zip(*pts), marker=MARKERS[j % len(MARKERS)], color=_colour(j if len(runs) == 1 else i),
                    ls=("-", "--", ":")[j % 3],
                    label=f"{r.name} {k[4:-5]}")
    ax.set_title("online kNN accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pick_snapshots(snapshots: list, n: int = 6) -> list:
    """Up to ``n`` snapshots evenly spread over the run, always the first and the last."""
    if len(snapshots) <= n:
        return list(snapshots)
    idx = np.unique(np.linspace(0, len(snapshots) - 1, n).round().astype(int))
    return [snapshots[i] for i in idx]


def correlation_figure(run, n: int = 6):
    """C[:k, :k] at up to ``n`` points of one run: it should approach the identity."""
    snaps = pick_snapshots(run.snapshots, n)
    if not snaps:
        return None
    fig, axes = _figure(2.3 * len(snaps) + 0.8, 2.8, len(snaps))
    im = None
    for ax, s in zip(axes, snaps):
        im = ax.imshow(s["c"], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ep = run.epoch_of(s["step"])
        ax.set_title(f"step {s['step']}" + (f"\nepoch {ep:.2f}" if ep is not None else ""), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="C_ij")
    fig.suptitle(f"{run.name}: cross-correlation C, first {snaps[0]['dims']} dimensions", fontsize=10)
    return fig


def identity_figure(runs):
    """How far the snapshot blocks are from the identity: mean diagonal and RMS off-diagonal over the run."""
    if not any(r.snapshots for r in runs):
        return None
    fig, (ax,) = _figure()
    for i, r in enumerate(runs):
        if not r.snapshots:
            continue
        x = [r.epoch_of(s["step"]) if r.epoch_of(s["step"]) is not None else s["step"] for s in r.snapshots]
        diag = [float(np.mean(np.diag(s["c"]))) for s in r.snapshots]
        off = [float(np.sqrt(np.mean((s["c"] - np.diag(np.diag(s["c"]))) ** 2 * s["dims"] / max(s["dims"] - 1, 1))))
               for s in r.snapshots]
        ax.plot(x, diag, color=_colour(i), marker="o", label=f"{r.name}: mean C_ii (→ 1)")
        ax.plot(x, off, color=_colour(i), marker="s", ls="--", label=f"{r.name}: RMS C_ij, i≠j (→ 0)")
    ax.set_title("C approaching the identity (snapshot blocks)")
    ax.set_xlabel("epoch")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def spectrum_figure(runs, diags):
    pairs = [(i, r, d) for i, (r, d) in enumerate(zip(runs, diags)) if d is not None]
    if not pairs:
        return None
    fig, (a, b) = _figure(11, 3.8, 2)
    for i, r, d in pairs:
        for ax, s, rk in ((a, d.embedding_singular_values, d.rankme_embeddings),
                          (b, d.feature_singular_values, d.rankme_features)):
            if s is not None and len(s) and s[0] > 0:
                ax.plot(np.arange(1, len(s) + 1), s / s[0], color=_colour(i), label=f"{r.name} (RankMe {rk:.1f})")
        # N images of D dimensions have at most N - 1 centred directions: the drop at N is arithmetic, not collapse
        for ax, std in ((a, d.embedding_std), (b, d.feature_std)):
            if std is not None and d.samples < len(std):
                ax.axvline(d.samples, color=_colour(i), ls=":", lw=1.0,
                           label=f"rank ≤ N = {d.samples} samples (< D = {len(std)})")
    a.set_title("singular values of the embeddings (projector output)")
    b.set_title("singular values of the backbone features")
    for ax in (a, b):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("index")
        ax.set_ylabel("σ_i / σ_1")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def std_figure(runs, diags):
    pairs = [(i, r, d) for i, (r, d) in enumerate(zip(runs, diags)) if d is not None]
    if not pairs:
        return None
    fig, (a, b) = _figure(11, 3.8, 2)
    for i, r, d in pairs:
        for ax, s in ((a, d.embedding_std), (b, d.feature_std)):
            if s is not None:
                ax.plot(np.sort(s)[::-1], color=_colour(i), label=r.name)
                ax.axhline(1 / np.sqrt(len(s)), color=_colour(i), ls=":", lw=0.8)
    a.set_title("per-dimension std of L2-normalised embeddings")
    b.set_title("per-dimension std of L2-normalised backbone features")
    for ax in (a, b):
        ax.set_xlabel("dimension (sorted)")
        ax.set_ylabel("std (dotted: 1/√D)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def images_phrase(n: int, split: str) -> str:
    """``403 images (all)``, ``512 train images``: the split named once, and "images" once."""
    split = (split or "").strip()
    words = split.removesuffix("images").strip()
    if split.startswith("all"):
        return f"{n} images ({words})" if words != "all" else f"all {n} images"
    return f"{n} {words} images" if words else f"{n} images"


def map_figure(run, d):
    if d is None:
        return None
    fig, (ax,) = _figure(5.6, 4.6)
    xy = d.map_xy
    if d.labels is not None:
        classes = np.unique(d.labels)
        for j, c in enumerate(classes):
            m = d.labels == c
            name = d.class_names[c] if 0 <= c < len(d.class_names) else str(c)
            ax.scatter(xy[m, 0], xy[m, 1], s=6, color=f"C{j % 10}" if len(classes) <= 10 else None, label=name)
        if len(classes) <= 20:
            ax.legend(fontsize=7, markerscale=2, loc="best")
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=6, color="0.4")
    ax.set_title(f"{run.name}: backbone features, {d.map_method} ({images_phrase(d.samples, d.split)})", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig
