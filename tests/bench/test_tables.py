"""A bench result as people read it: the console table (a failed or pending figure says so), the RESULTS.md row
naming the network, and the JSON file."""

import json

from barlowtwins.bench import BenchResult, results_row, save_json, table


def _result(**kw) -> BenchResult:
    base = dict(spec={"backbone": "resnet18", "width": 8, "stem": "small", "projector": "32-32", "image_size": 16,
                      "batch_size": 4, "workers": 0},
                environment={"date": "2026-12-01", "device": "a CPU (2 cores)", "torch": "2.9", "torchvision": "0.24"},
                model_only={"samples_per_sec": 200.0, "tflops": 0.5, "mfu": None, "gflop_per_sample": 0.1,
                            "host_max_rss_gib": 1.5},
                data_only={"cpu": 100.0}, end_to_end={"cpu": 50.0}, paths=["cpu"])
    base.update(kw)
    return BenchResult(**base)


def test_the_table_has_a_line_per_measurement_and_the_share_of_model_only():
    lines = table(_result()).splitlines()
    assert lines[0].split() == ["measurement", "samples/s", "notes"]
    assert lines[1].startswith("model only (synthetic device tensors)") and "200.0" in lines[1]
    assert "0.500 TFLOP/s, MFU n/a, 0.10 GFLOP/sample" in lines[1]
    assert any(ln.startswith("data path cpu (no model)") and ln.endswith("100.0") for ln in lines)
    assert any(ln.startswith("end to end, cpu") and "0.25 of model only" in ln for ln in lines)
    assert lines[-1] == "peak memory (host max rss): 1.50 GiB"
    assert not any("official" in ln for ln in lines)  # not asked for: no row


def test_failed_and_pending_figures_say_so():
    res = _result(end_to_end={}, data_only={}, errors={"data path cpu": "worker died"},
                  pending=["end to end cpu"], official_pil=300.0)
    text = table(res)
    assert "data path cpu (no model)" in text and "failed" in text and "not run" in text
    assert text.splitlines()[-1] == "failed: data path cpu: worker died"
    assert "official PIL pipeline (no model)" in text and "300.0" in text


def test_the_row_names_the_network_and_every_figure():
    row = results_row(_result(official_pil=80.0))
    assert row.startswith("| 2026-12-01 | a CPU (2 cores) | 2.9 / 0.24 | resnet18 width 8, small stem, projector "
                          "32-32 | 16 | 4 | 0 | 200.0 | cpu 100.0 / 50.0 | 80.0 | 0.500 | n/a | 1.50 |")
    plain = results_row(_result(spec={"backbone": "resnet50", "image_size": 224, "batch_size": 64, "workers": 8}))
    assert "| resnet50 | 224 | 64 | 8 |" in plain and "|  |" in plain  # no official run: an empty cell


def test_the_json_file_holds_the_whole_result(tmp_path):
    res = _result(skipped=[{"file": "a.jpg", "reason": "truncated"}])
    save_json(tmp_path / "b.json", res)
    data = json.loads((tmp_path / "b.json").read_text())
    assert data == json.loads(json.dumps(res.to_dict())) and data["skipped_files"] == 1
