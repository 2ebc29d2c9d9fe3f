"""Report inputs made by hand for the report's tests: a run's data, its diagnostics, and a run folder with a
config and a metrics log (no training)."""

import json
from pathlib import Path

import numpy as np

from barlowtwins.report.diagnostics import Diagnostics
from barlowtwins.report.runs import RunData


def run_data(path=Path("/runs/photos"), **kw) -> RunData:
    base = {"path": path, "name": path.name, "config": {}, "steps": [], "events": [], "snapshots": []}
    base.update(kw)
    return RunData(**base)


def diagnostics(samples=40, split="all images", d=128, f=512, labels=None) -> Diagnostics:
    rng = np.random.default_rng(0)
    sv = np.sort(rng.random(min(samples, d)))[::-1] + 0.1
    return Diagnostics(samples=samples, split=split, embedding_singular_values=sv,
                       feature_singular_values=np.sort(rng.random(min(samples, f)))[::-1] + 0.1,
                       rankme_embeddings=10.0, rankme_features=12.0, erank_embeddings=9.0, erank_features=11.0,
                       embedding_std=np.full(d, 0.05), feature_std=np.full(f, 0.03),
                       map_xy=rng.random((samples, 2)), map_method="PCA", labels=labels, class_names=[],
                       weights="checkpoint.pth")


def write_run(folder: Path, steps: list[int], spe: int = 10, total: int = 100, warmup_epochs: float = 2,
              lr: float = 0.2) -> Path:
    """A run folder as a pretraining run leaves it, without weights: config.yaml and metrics.jsonl (a start
    event, then a step record at each of ``steps``)."""
    from barlowtwins.training.optim import warmup_cosine

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"warmup_epochs: {warmup_epochs}\nbackbone: resnet18\n")
    recs = [{"event": "start", "step": 0, "steps_per_epoch": spe, "total_steps": total}]
    recs += [{"step": s, "epoch": s / spe, "loss": 100.0 / s, "on_diag": 1.0, "off_diag": 1.0,
              "lr_weights": lr * warmup_cosine(s - 1, total, round(warmup_epochs * spe))} for s in steps]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder
