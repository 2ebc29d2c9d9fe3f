"""Result files and the results table."""



def test_results_table_shows_every_metric_a_protocol_reports(tmp_path, capsys):
    import json

    from barlowtwins.cli import main
    from barlowtwins.evaluate.results import EvalResult, find_results, markdown_table, write_result

    records = [
        EvalResult("knn", "folder", "val", {"k=20": {"top1": 71.0, "top5": 90.5}, "k=200": {"top1": 70.0,
                                                                                         "top5": 91.0}}),
        EvalResult("linear-paper", "folder", "val", {"last": {"top1": 60.0, "top5": 80.0},
                                                      "best": {"top1": 61.0, "top5": 81.0, "epoch": 7}}),
        EvalResult("transfer-svm", "voc2007", "test", {"mAP": 80.25}),
        EvalResult("detect", "voc0712", "test", {"AP": 54.5, "AP50": 81.25, "AP75": 60.75}),  # detection
    ]
    for i, r in enumerate(records):
        write_result({**r.to_record(), "checkpoint": "runs/x"}, tmp_path / "eval" / f"{i}.json")
    (tmp_path / "eval" / "other.json").write_text(json.dumps({"not": "a result"}))
    table = markdown_table(find_results([str(tmp_path)]))
    lines = table.splitlines()
    assert lines[0] == ("| checkpoint | protocol | dataset | split | setting | top-1 | top-5 | mAP | AP | AP50 | AP75 "
                        "| epoch | file |")
    assert len(lines) == 2 + 2 + 2 + 1 + 1
    detect = next(line for line in lines if "| detect |" in line).split(" | ")
    assert detect[5:12] == ["", "", "", "54.50", "81.25", "60.75", ""]
    best = next(line for line in lines if "| best |" in line).split(" | ")
    assert best[5:7] == ["61.00", "81.00"] and best[11] == "7"
    assert records[3].summary() == "AP 54.50 AP50 81.25 AP75 60.75"
    assert records[0].summary() == "k=20: top-1 71.00 top-5 90.50 | k=200: top-1 70.00 top-5 91.00"
    assert main(["results", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == table


def test_results_table_cells_cannot_break_the_table(tmp_path):
    """A | or a line break in a value (a checkpoint path, a data set name) stays inside its cell."""
    from barlowtwins.evaluate.results import EvalResult, find_results, markdown_table, write_result

    rec = EvalResult("knn", "my|data\nset", "val", {"top1": 50.0}).to_record()
    write_result({**rec, "checkpoint": "runs/a|b\r\nc"}, tmp_path / "eval" / "r.json")
    lines = markdown_table(find_results([str(tmp_path)])).splitlines()
    assert len(lines) == 3
    row = lines[2]
    assert "runs/a\\|b" in row and "my\\|data set" in row
    cells = [c for c in row.replace("\\|", "").split("|")]
    assert len(cells) == len(lines[0].split("|"))  # as many columns as the header


def test_results_warns_once_per_skipped_file(tmp_path, capsys):
    """A truncated, binary or malformed result file is named in one warning line each; the good ones are shown."""
    from barlowtwins.cli import main
    from barlowtwins.evaluate.results import EvalResult, write_result

    good = EvalResult("knn", "folder", "val", {"top1": 50.0}).to_record()
    write_result(good, tmp_path / "eval" / "good.json")
    text = (tmp_path / "eval" / "good.json").read_text()
    (tmp_path / "eval" / "cut.json").write_text(text[: len(text) // 2])
    (tmp_path / "eval" / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "eval" / "bad-metrics.json").write_text('{"protocol": "knn", "metrics": [1, 2]}')
    (tmp_path / "eval" / "other.json").write_text('{"not": "a result"}')  # another JSON file: no word
    assert main(["results", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = captured.err.strip().splitlines()
    assert len(warnings) == 3 and all(w.startswith("warning: skipped ") for w in warnings)
    for name in ("cut.json", "binary.json", "bad-metrics.json"):
        assert sum(name in w for w in warnings) == 1
    assert "Traceback" not in captured.err and captured.out.count("| knn |") == 1


def test_top5_is_not_shown_for_five_classes_or_fewer():
    from barlowtwins.evaluate.results import EvalResult

    few = EvalResult(protocol="knn", dataset="folder", split="val", train_split="train", hyperparameters={},
                     metrics={"k=20": {"top1": 40.0, "top5": 100.0}}, seconds=1.0,
                     extra={"classes": ["a", "b", "c", "d", "e"]})
    many = EvalResult(protocol="knn", dataset="folder", split="val", train_split="train", hyperparameters={},
                      metrics={"top1": 40.0, "top5": 70.0}, seconds=1.0, extra={"classes": list("abcdefgh")})
    assert few.summary() == "k=20: top-1 40.00" and many.summary() == "top-1 40.00 top-5 70.00"


def test_an_output_name_without_json_is_a_folder_and_metrics_are_rounded(tmp_path):
    """``--output NAME`` used to write a file called NAME; metrics carried float32 noise (34.00000035762787)."""
    import json

    import pytest

    from barlowtwins.errors import ConfigError
    from barlowtwins.evaluate.results import result_path, write_result

    assert result_path("knn", "folder", None, str(tmp_path / "NAME")) == tmp_path / "NAME" / "knn-folder.json"
    assert result_path("knn", "folder", None, str(tmp_path / "r.json")) == tmp_path / "r.json"
    with pytest.raises(ConfigError, match=r"--output .*r\.txt: a result is a JSON file: name it r\.json"):
        result_path("knn", "folder", None, str(tmp_path / "r.txt"))
    path = write_result({"protocol": "knn", "metrics": {"k=20": {"top1": 34.00000035762787, "top5": 100.0},
                                                        "mAP": 1 / 3, "n": 7}, "seconds": 1.23456789},
                        tmp_path / "NAME" / "knn-folder.json")
    text = path.read_text()
    rec = json.loads(text)
    assert "34.00000035762787" not in text and rec["metrics"] == {"k=20": {"top1": 34.0, "top5": 100.0},
                                                                  "mAP": 0.3333, "n": 7}
    assert rec["seconds"] == 1.23456789  # only the metrics are rounded
