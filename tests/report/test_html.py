"""The report page's HTML: text escaped, figures embedded as base64 PNGs, the summary and result rows true to
the runs (random-init baselines named as such)."""

import base64
import re
from pathlib import Path

from report_fakes import diagnostics, run_data

from barlowtwins.report.html import (
    RESULTS_HEAD,
    SUMMARY_HEAD,
    esc,
    figure,
    is_random_init,
    note,
    page,
    result_rows,
    summary_rows,
    table,
)


def test_random_init_results_are_labelled_as_such():
    root = Path("/runs/photos")
    rec = {"protocol": "knn", "dataset": "folder", "metrics": {"top1": 50.0}}
    run = run_data(root, results=[(root / "knn-folder.json", rec), (root / "knn-folder-random.json", rec),
                              (root / "other.json", {**rec, "backbone": {"random_init": True}})])
    names = [row[0] for row in result_rows([run])]
    assert names == ["photos", "photos (random init)", "photos (random init)"]


def test_results_of_several_settings_are_one_row_each_with_their_file():
    root = Path("/runs/photos")
    rec = {"protocol": "knn", "dataset": "folder", "split": "val",
           "metrics": {"k=20": {"top1": 81.25, "top5": 99.0}, "k=200": {"top1": 80.0}}}
    svm = {"protocol": "transfer-svm", "dataset": "voc07", "split": "test", "metrics": {"mAP": 55.5}}
    run = run_data(root, results=[(root / "eval" / "knn-folder.json", rec), (Path("/elsewhere/svm.json"), svm)])
    assert result_rows([run]) == [
        ["photos", "knn", "folder", "val", "k=20", "81.25", "99.00", "", "eval/knn-folder.json"],
        ["photos", "knn", "folder", "val", "k=200", "80.00", "", "", "eval/knn-folder.json"],
        ["photos", "transfer-svm", "voc07", "test", "", "", "", "55.50", "/elsewhere/svm.json"],
    ]
    assert all(len(row) == len(RESULTS_HEAD) for row in result_rows([run]))
    assert not is_random_init(root / "knn-random-crop.json", {"metrics": {}})


def test_text_is_escaped_everywhere():
    assert esc("<b>&'\"") == "&lt;b&gt;&amp;&#x27;&quot;" and esc(None) == "" and esc(3) == "3"
    t = table(["a<", "b"], [["<script>", None], [1.5, "x&y"]])
    assert "<th>a&lt;</th>" in t and "<td>&lt;script&gt;</td><td></td>" in t and "<td>x&amp;y</td>" in t
    assert t.count("<tr>") == 3 and "<script>" not in t
    assert note("a <b> note") == '<p class="note">a &lt;b&gt; note</p>'


def test_a_figure_embeds_its_png_and_an_escaped_caption():
    png = b"\x89PNG\r\n\x1a\n fake image bytes"
    html = figure("loss", png, 'C "approaches" <I>')
    data = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html).group(1)
    assert base64.b64decode(data) == png and html.startswith('<figure id="loss">')
    assert "<figcaption>C &quot;approaches&quot; &lt;I&gt;</figcaption>" in html


def test_the_summary_row_says_how_far_the_run_got():
    steps = [{"step": s, "epoch": s / 10, "loss": 1000.0 / s, "images_per_sec": ips, "data_wait_share": w}
             for s, ips, w in ((10, 5.0, 0.5), (20, 100.0, 0.1), (30, 300.0, 0.3))]
    run = run_data(config={"backbone": "resnet18", "projector": "32-32", "batch_size": 16, "image_size": 28},
                   steps=steps, events=[{"event": "start", "total_steps": 30}, {"event": "done"}])
    row = summary_rows([run], [diagnostics()])[0]
    assert len(row) == len(SUMMARY_HEAD)
    assert row[:8] == ["photos", "resnet18", "32-32", 16, 28, "30 / 30 (done)", "3.00", "33.3"]
    assert row[8] == "200"  # median throughput without the first (warm-up) record
    assert row[9] == "30.0%" and row[10:] == ["10.0", "12.0"]
    unfinished = summary_rows([run_data(steps=steps[:1])], [None])[0]
    assert unfinished[5] == "10 / ?" and unfinished[10:] == ["", ""]  # no total logged, no diagnostics


def test_the_page_has_its_title_summary_and_sections():
    text = page("My <runs>", [run_data()], [None], [("Training", ['<p id="part">x</p>']), ("Empty", [])])
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "<title>My &lt;runs&gt;</title>" in text and "<h1>My &lt;runs&gt;</h1>" in text
    assert [m for m in re.findall(r"<h2>(.*?)</h2>", text)] == ["Summary", "Training", "Empty"]
    assert '<p id="part">x</p>' in text and "1 run(s): /runs/photos" in text
