"""`barlowtwins report`: every figure from short CPU runs (in memory and a JPEG folder), the page rendered by a
real headless browser, and clean errors. Each module's own tests: test_build.py, test_runs.py, test_plots.py,
test_html.py, test_diagnostics.py (and tests/cli/test_report.py for the command)."""

import base64
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from conftest import (  # noqa: E402
    make_fashion_mnist,
    make_image_folder,
    tiny_config,  # noqa: E402
)
from PIL import Image  # noqa: E402

from barlowtwins.cli import main  # noqa: E402
from barlowtwins.report import (
    build_report,
    plots,  # noqa: E402
)
from barlowtwins.report.runs import load_run  # noqa: E402
from barlowtwins.training.trainer import pretrain  # noqa: E402

TRAINING = ["loss", "lr", "throughput", "data_wait"]
DIAGNOSTICS = ["spectrum", "std"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two short runs on fake Fashion-MNIST (one with the online kNN and a kNN result) and one on JPEG files."""
    root = tmp_path_factory.mktemp("report")
    fm = make_fashion_mnist(root / "fmnist")
    pretrain(tiny_config(fm, root / "fm-a", epochs=3, knn_every=3, knn_max_samples=40, correlation_dims=16))
    pretrain(tiny_config(fm, root / "fm-b", epochs=1, lambd=0.02, seed=3, correlation_dims=8))
    assert main(["knn", "--checkpoint", str(root / "fm-a"), "--dataset", "fashion-mnist", "--data-dir", str(fm),
                 "--device", "cpu", "--workers", "0"]) == 0
    tree = make_image_folder(root / "jpegs", per_class=8)
    pretrain(tiny_config(tree, root / "jpg", dataset="folder", batch_size=4, epochs=1, workers=0))
    return root


@pytest.fixture(scope="module")
def report_a(runs):
    return build_report([runs / "fm-a"], runs / "pages" / "r.html")


def _pngs_in(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)]


def test_report_of_an_in_memory_run_has_every_figure(runs, report_a):
    res = report_a
    expected = TRAINING + ["knn", "identity", "correlation-fm-a"] + DIAGNOSTICS + ["map-fm-a"]
    assert sorted(res.figures) == sorted(expected), res.notes
    html = res.html.read_text()
    pngs = _pngs_in(html)
    assert len(pngs) == len(expected)  # every figure embedded: the page stands alone
    for fig_id, path in res.figures.items():
        assert path.parent == runs / "pages" / "r_files" and f'id="{fig_id}"' in html
        assert path.read_bytes() in pngs
        img = Image.open(path)
        assert img.size[0] > 300 and np.asarray(img.convert("L")).std() > 5, fig_id  # not an empty canvas
    d = res.diagnostics[0]
    assert d.labels is not None and d.split == "test" and d.samples == 32 and d.weights == "checkpoint.pth"
    assert d.map_method == "t-SNE"  # scikit-learn installed, umap-learn not
    assert len(d.feature_singular_values) == 32 and len(d.embedding_std) == 32  # 64 features, 32 images; D = 32
    assert "knn-fashion-mnist.json" in html and "<td>knn</td>" in html  # the evaluation result as a table


def test_heat_maps_show_the_run_from_first_to_last_step(runs):
    run = load_run(runs / "fm-a")
    assert [s["step"] for s in run.snapshots][0] == 1 and run.snapshots[-1]["step"] == 12
    fig = plots.correlation_figure(run)
    images = [im for ax in fig.axes for im in ax.get_images()]
    shown = plots.pick_snapshots(run.snapshots)
    assert len(images) == len(shown) >= 4 and shown[0]["step"] == 1 and shown[-1]["step"] == 12
    np.testing.assert_array_equal(images[-1].get_array(), run.snapshots[-1]["c"])


def test_report_of_a_jpeg_folder_run(runs, tmp_path):
    res = build_report([runs / "jpg"], tmp_path / "j.html")
    assert {*TRAINING, "identity", "correlation-jpg", *DIAGNOSTICS, "map-jpg"} <= set(res.figures), res.notes
    d = res.diagnostics[0]
    assert d.split == "val" and d.labels is not None and d.class_names == ["cat", "dog"]


def test_several_runs_are_overlaid(runs, tmp_path):
    res = build_report([runs / "fm-a", runs / "fm-b"], tmp_path / "two.html", diagnostics=False)
    loaded = [load_run(runs / "fm-a"), load_run(runs / "fm-b")]
    assert len(plots.loss_figure(loaded).axes[0].get_lines()) == 2
    assert {"correlation-fm-a", "correlation-fm-b"} <= set(res.figures)
    html = res.html.read_text()
    assert "<td>fm-a</td>" in html and "<td>fm-b</td>" in html


def test_report_renders_in_a_headless_browser(report_a, tmp_path):
    browser = next((shutil.which(b) for b in ("chromium", "chromium-browser") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    res = report_a
    shot = tmp_path / "shot.png"
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400",
           f"--screenshot={shot}", res.html.resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    px = np.asarray(Image.open(shot).convert("RGB")).astype(np.int32)
    assert px.std() > 20  # not a blank page
    coloured = (np.abs(px[..., 0] - px[..., 2]) > 60).mean()  # the red/blue heat maps and coloured curves drew
    assert coloured > 0.002, coloured


def test_cli_writes_the_page_next_to_the_run(runs, capsys):
    assert main(["report", str(runs / "fm-b"), "--no-diagnostics"]) == 0
    assert (runs / "fm-b" / "report.html").exists() and (runs / "fm-b" / "report_files" / "loss.png").exists()
    assert "wrote" in capsys.readouterr().out


def test_missing_matplotlib_is_one_line_and_exit_2(runs, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["report", str(runs / "fm-a")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "barlowtwins report: error: the report needs matplotlib: pip install 'barlowtwins[report]'"
