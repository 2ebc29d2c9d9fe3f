"""The report cannot mislead: random-init rows named as such, one look per online-kNN curve, the sample-count
limit marked on the spectra, captions true to the data used, and warm-up visible in the learning-rate plot."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import barlowtwins.report.build as report_module
from barlowtwins.report import build_report, plots
from barlowtwins.report.diagnostics import Diagnostics
from barlowtwins.report.html import result_rows
from barlowtwins.report.runs import RunData


def _run(path=Path("/runs/photos"), **kw) -> RunData:
    base = {"path": path, "name": path.name, "config": {}, "steps": [], "events": [], "snapshots": []}
    base.update(kw)
    return RunData(**base)


def _diag(samples=40, split="all images", d=128, f=512, labels=None) -> Diagnostics:
    rng = np.random.default_rng(0)
    sv = np.sort(rng.random(min(samples, d)))[::-1] + 0.1
    return Diagnostics(samples=samples, split=split, embedding_singular_values=sv,
                       feature_singular_values=np.sort(rng.random(min(samples, f)))[::-1] + 0.1,
                       rankme_embeddings=10.0, rankme_features=12.0, erank_embeddings=9.0, erank_features=11.0,
                       embedding_std=np.full(d, 0.05), feature_std=np.full(f, 0.03),
                       map_xy=rng.random((samples, 2)), map_method="PCA", labels=labels, class_names=[],
                       weights="checkpoint.pth")


def test_random_init_results_are_labelled_as_such():
    root = Path("/runs/photos")
    rec = {"protocol": "knn", "dataset": "folder", "metrics": {"top1": 50.0}}
    run = _run(root, results=[(root / "knn-folder.json", rec), (root / "knn-folder-random.json", rec),
                              (root / "other.json", {**rec, "backbone": {"random_init": True}})])
    names = [row[0] for row in result_rows([run])]
    assert names == ["photos", "photos (random init)", "photos (random init)"]


def test_every_online_knn_curve_has_its_own_colour_and_marker():
    run = _run(events=[{"event": "knn", "epoch": e, "knn_k20_top1": 50.0 + e, "knn_k200_top1": 48.0 + e}
                       for e in (1, 2, 3)])
    fig = plots.knn_figure([run])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    assert lines[0].get_color() != lines[1].get_color()
    assert lines[0].get_marker() != lines[1].get_marker()


def test_spectra_mark_the_sample_count_when_it_is_below_the_dimension():
    fig = plots.spectrum_figure([_run()], [_diag(samples=40, d=128, f=512)])
    for ax in fig.axes:
        marks = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [40, 40]]
        assert len(marks) == 1
        assert "rank ≤ N = 40 samples" in marks[0].get_label()
    fig = plots.spectrum_figure([_run()], [_diag(samples=600, d=128, f=512)])
    assert all(len(ax.get_lines()) == 1 for ax in fig.axes)  # N ≥ D: nothing to mark


@pytest.mark.parametrize("split, phrase", [("all images", "all 403 images"), ("test", "403 test images"),
                                           ("train", "403 train images")])
def test_map_title_names_the_images_once(split, phrase):
    fig = plots.map_figure(_run(), _diag(samples=403, split=split))
    title = fig.axes[0].get_title()
    assert phrase in title
    assert "images images" not in title


def _write_run(folder: Path, steps: list[int], spe: int = 10, total: int = 100, warmup_epochs: float = 2,
               lr: float = 0.2) -> Path:
    from barlowtwins.training.optim import warmup_cosine

    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"warmup_epochs: {warmup_epochs}\nbackbone: resnet18\n")
    recs = [{"event": "start", "step": 0, "steps_per_epoch": spe, "total_steps": total}]
    recs += [{"step": s, "epoch": s / spe, "loss": 100.0 / s, "on_diag": 1.0, "off_diag": 1.0,
              "lr_weights": lr * warmup_cosine(s - 1, total, round(warmup_epochs * spe))} for s in steps]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return folder


def test_learning_rate_plot_shows_warm_up_and_cosine_at_every_step(tmp_path):
    run_dir = _write_run(tmp_path / "run", steps=[20, 40, 60, 80, 100])
    from barlowtwins.report.runs import load_run

    fig = plots.lr_figure([load_run(run_dir)])
    curves = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 100]
    assert len(curves) == 1
    y = np.asarray(curves[0].get_ydata())
    assert y[0] == pytest.approx(0.0)
    assert y.argmax() == 20  # the peak after 20 warm-up steps, at the logged rate 0.2
    assert y.max() == pytest.approx(0.2)
    assert y[-1] < 0.01


def test_caption_of_a_run_with_few_logged_points_says_so(tmp_path):
    run_dir = _write_run(tmp_path / "short", steps=[20, 40, 60])
    page = build_report([run_dir], tmp_path / "r.html", diagnostics=False).html.read_text()
    assert "Only 3 logged point(s) per curve" in page
    many = _write_run(tmp_path / "long", steps=list(range(10, 101, 10)))
    assert "logged point(s)" not in build_report([many], tmp_path / "r2.html", diagnostics=False).html.read_text()


@pytest.mark.parametrize("split, held_out", [("all images", False), ("train", False), ("test", True)])
def test_captions_say_held_out_only_for_held_out_data(tmp_path, monkeypatch, split, held_out):
    monkeypatch.setattr(report_module, "run_diagnostics", lambda *a, **k: _diag(samples=403, split=split))
    run_dir = _write_run(tmp_path / "run", steps=list(range(10, 101, 10)))
    page = build_report([run_dir], tmp_path / "r.html").html.read_text()
    captions = " ".join(re.findall(r"<figcaption>(.*?)</figcaption>", page, flags=re.DOTALL))
    assert ("held-out" in captions) == held_out
    assert "403" in captions
    assert "images images" not in captions
