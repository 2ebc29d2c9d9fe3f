"""The report's figures: one look per online-kNN curve, the sample-count limit marked on the spectra, map titles
that name the images once, the schedule drawn at every step, and the snapshots chosen for the heat maps."""

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from report_fakes import diagnostics, run_data, write_run  # noqa: E402

from barlowtwins.errors import ConfigError  # noqa: E402
from barlowtwins.report import plots  # noqa: E402


def test_every_online_knn_curve_has_its_own_colour_and_marker():
    run = run_data(events=[{"event": "knn", "epoch": e, "knn_k20_top1": 50.0 + e, "knn_k200_top1": 48.0 + e}
                       for e in (1, 2, 3)])
    fig = plots.knn_figure([run])
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    assert lines[0].get_color() != lines[1].get_color()
    assert lines[0].get_marker() != lines[1].get_marker()


def test_spectra_mark_the_sample_count_when_it_is_below_the_dimension():
    fig = plots.spectrum_figure([run_data()], [diagnostics(samples=40, d=128, f=512)])
    for ax in fig.axes:
        marks = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [40, 40]]
        assert len(marks) == 1
        assert "rank ≤ N = 40 samples" in marks[0].get_label()
    fig = plots.spectrum_figure([run_data()], [diagnostics(samples=600, d=128, f=512)])
    assert all(len(ax.get_lines()) == 1 for ax in fig.axes)  # N ≥ D: nothing to mark


@pytest.mark.parametrize("split, phrase", [("all images", "all 403 images"), ("test", "403 test images"),
                                           ("train", "403 train images")])
def test_map_title_names_the_images_once(split, phrase):
    fig = plots.map_figure(run_data(), diagnostics(samples=403, split=split))
    title = fig.axes[0].get_title()
    assert phrase in title
    assert "images images" not in title


def test_learning_rate_plot_shows_warm_up_and_cosine_at_every_step(tmp_path):
    run_dir = write_run(tmp_path / "run", steps=[20, 40, 60, 80, 100])
    from barlowtwins.report.runs import load_run

    fig = plots.lr_figure([load_run(run_dir)])
    curves = [ln for ln in fig.axes[0].get_lines() if len(ln.get_xdata()) == 100]
    assert len(curves) == 1
    y = np.asarray(curves[0].get_ydata())
    assert y[0] == pytest.approx(0.0)
    assert y.argmax() == 20  # the peak after 20 warm-up steps, at the logged rate 0.2
    assert y.max() == pytest.approx(0.2)
    assert y[-1] < 0.01


def test_the_snapshots_shown_are_spread_over_the_run_with_the_first_and_last():
    snaps = [{"step": s} for s in range(1, 21)]
    shown = [s["step"] for s in plots.pick_snapshots(snaps, 6)]
    assert len(shown) == 6 and shown[0] == 1 and shown[-1] == 20 and shown == sorted(shown)
    assert plots.pick_snapshots(snaps[:4], 6) == snaps[:4]
    assert plots.pick_snapshots([], 6) == []


def test_the_schedule_needs_the_runs_length_and_a_logged_rate(tmp_path):
    from barlowtwins.report.runs import load_run

    run = load_run(write_run(tmp_path / "run", steps=[20, 40], spe=10, total=100, lr=0.2))
    epochs, rates = plots.schedule_curve(run)
    assert len(epochs) == len(rates) == 100 and epochs[0] == pytest.approx(0.1) and epochs[-1] == pytest.approx(10)
    assert max(rates) == pytest.approx(0.2)
    assert plots.schedule_curve(run_data(steps=run.steps)) is None  # no start event: length unknown
    no_rate = run_data(events=run.events, steps=[{"step": 20, "loss": 1.0}])
    assert plots.schedule_curve(no_rate) is None


def test_nothing_logged_is_no_figure_and_each_run_is_a_line():
    empty = run_data()
    assert plots.loss_figure([empty]) is None and plots.lr_figure([empty]) is None
    assert plots.throughput_figure([empty]) is None and plots.knn_figure([empty]) is None
    assert plots.identity_figure([empty]) is None and plots.correlation_figure(empty) is None
    assert plots.spectrum_figure([empty], [None]) is None and plots.map_figure(empty, None) is None
    steps = [{"step": s, "epoch": s / 10, "loss": 10.0 / s, "on_diag": 1.0, "off_diag": 2.0} for s in (1, 2, 3)]
    fig = plots.loss_figure([run_data(steps=steps), run_data(name="other", steps=steps)])
    assert len(fig.axes) == 3 and all(len(ax.get_lines()) == 2 for ax in fig.axes)  # loss, on- and off-diagonal
    assert plots.png_bytes(fig).startswith(b"\x89PNG")


def test_the_heat_map_shows_each_snapshot_as_saved():
    rng = np.random.default_rng(0)
    snaps = [{"step": s, "dims": 4, "c": rng.uniform(-1, 1, (4, 4))} for s in (5, 10)]
    run = run_data(snapshots=snaps, events=[{"event": "start", "steps_per_epoch": 5}])
    fig = plots.correlation_figure(run)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 2
    np.testing.assert_array_equal(images[1].get_array(), snaps[1]["c"])
    assert [ax.get_title() for ax in fig.axes[:2]] == ["step 5\nepoch 1.00", "step 10\nepoch 2.00"]


@pytest.mark.parametrize("n, split, phrase", [(403, "all images", "all 403 images"), (12, "val", "12 val images"),
                                              (9, "", "9 images"), (5, "train images", "5 train images")])
def test_images_phrase(n, split, phrase):
    assert plots.images_phrase(n, split) == phrase


def test_without_matplotlib_the_report_is_one_line(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ConfigError, match=r"^the report needs matplotlib: pip install 'barlowtwins\[report\]'$"):
        plots.require_matplotlib()
