"""The command line: a short real run on an image folder the test writes, and one-line errors for bad input."""

import json
import subprocess
import sys

import pytest
import yaml

from barlowtwins.cli import main

TINY = ["--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem", "small", "--projector", "32-32",
        "--no-progress", "--workers", "0"]


def test_pretrain_then_knn_on_a_folder_of_jpeg_and_png(image_tree, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["pretrain", "--dataset", "images", "--data-dir", str(image_tree / "train"), "--epochs", "2",
                 "--batch-size", "4", "--warmup-epochs", "1", "--out", str(out), *TINY])
    assert code == 0
    assert (out / "backbone.pth").is_file() and (out / "checkpoint.pth").is_file()
    assert "pretrained 6 steps" in capsys.readouterr().out  # 12 images / 4 = 3 steps x 2 epochs

    code = main(["knn", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--k", "3", "--compare-random", "--workers", "0"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "kNN folder val (pretrained)" in printed and "random init" in printed
    record = json.loads((out / "eval" / "knn-folder.json").read_text())
    assert record["protocol"] == "knn" and record["split"] == "val" and record["num_test"] == 12
    assert 0 <= record["metrics"]["k=3"]["top1"] <= 100 and record["backbone"]["width"] == 8
    assert (out / "eval" / "knn-folder-random.json").is_file()

    # The linear probe reuses the features the kNN run extracted (same checkpoint, data, split, preprocessing).
    assert main(["linear", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--epochs", "3", "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reusing features from") == 2 and "linear (fast) folder val" in printed

    assert main(["results", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| checkpoint | protocol |") and table.count("| knn |") == 2
    assert table.count("| linear-fast |") == 1


def test_print_config_resolves_preset_then_flags(capsys, tmp_path):
    user = tmp_path / "mine.yaml"
    user.write_text("epochs: 5\nbatch_size: 64\n")
    assert main(["pretrain", "--preset", "imagenet", "--config", str(user), "--batch-size", "32",
                 "--print-config"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["backbone"] == "resnet50" and cfg["projector"] == "8192-8192-8192"
    assert cfg["epochs"] == 5 and cfg["batch_size"] == 32 and cfg["preset"] == "imagenet"


@pytest.mark.parametrize("args,message", [
    (["pretrain", "--dataset", "images", "--data-dir", "/nonexistent/folder"], "does not exist"),
    (["pretrain", "--preset", "imagenet-22k"], "unknown preset 'imagenet-22k'"),
    (["pretrain", "--dataset", "images", "--data-dir", "{tree}/train", "--backbone", "resnet5"], "unknown backbone"),
    (["pretrain", "--dataset", "images", "--data-dir", "{tree}/train", "--projector", "512-"],
     "malformed projector spec"),
    (["pretrain", "--dataset", "images", "--data-dir", "{tree}/train", "--batch-size", "1"], "at least 2 samples"),
    (["pretrain", "--dataset", "images", "--data-dir", "{empty}"], "no images found"),
    (["pretrain", "--dataset", "folder", "--data-dir", "{empty}"], "does not exist"),
    (["pretrain", "--dataset", "folder", "--data-dir", "{junk}"], "junk.pth is a file, not a folder"),
    (["pretrain", "--dataset", "images", "--data-dir", "{junk}"], "junk.pth is a file, not a folder"),
    (["pretrain", "--config", "{tree}/missing.yaml"], "cannot read config file"),
    (["knn", "--checkpoint", "{junk}", "--dataset", "folder", "--data-dir", "{tree}"],
     "not a readable PyTorch checkpoint"),
    (["knn", "--checkpoint", "{tree}"], "neither backbone.pth nor checkpoint.pth"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, image_tree, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 100)
    fill = {"tree": str(image_tree), "empty": str(tmp_path / "empty"), "junk": str(tmp_path / "junk.pth")}
    args = [a.format(**fill) for a in args]
    if args[0] == "pretrain":
        args += ["--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run" / "checkpoint.pth").exists()


def test_flags_are_never_abbreviated(capsys):
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--epoch", "3"])
    assert e.value.code == 2
    assert "unrecognized arguments: --epoch" in capsys.readouterr().err


def test_module_entry_point_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "barlowtwins", "pretrain", "--preset", "nope"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("barlowtwins pretrain: error: unknown preset 'nope'")
    assert "Traceback" not in proc.stderr


def test_list_backbones(capsys):
    assert main(["list-backbones", "resnet1*"]) == 0
    names = capsys.readouterr().out.splitlines()
    assert "resnet18" in names and "resnet50" not in names
    assert main(["list-backbones", "no-such-model"]) == 2
    assert "no backbone matches" in capsys.readouterr().err


def test_export_bad_input_is_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "missing.pth"), "--format", "onnx",
                 "--output", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args,message", [
    (["--lambd", "-1"], "--lambd must be >= 0"),
    (["--eta", "0"], "--eta must be > 0"),
    (["--momentum", "2"], "--momentum must be >= 0 and < 1"),
    (["--interpolation", "cubicx"], "did you mean bicubic?"),
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--image-size", "0"], "--image-size must be >= 8"),
    (["--max-steps", "0"], "--max-steps must be >= 1"),
    (["--std", "0", "0", "0"], "--std must be > 0"),
    (["--crop-scale", "0.9", "0.1"], "takes the low value first"),
    (["--backbone", "resnet19"], "did you mean resnet18?"),
    (["--epoch", "3"], "did you mean --epochs?"),
    (["--out", "{file}"], "is a file, not a folder"),
    (["--out", "{file}/run"], "cannot be created"),
    (["--knn-every", "1", "--knn-dataset", "folder", "--knn-data-dir", "{tree}/nope"], "does not exist"),
    (["--config", "{binary}"], "not a text (YAML) file"),
    (["--config", "{badyaml}"], "not valid YAML"),
    (["--multicrop-count", "2", "--multicrop-size", "32"], "--multicrop-size 32 is not smaller than --image-size 16"),
    (["--multicrop-count", "2", "--multicrop-size", "1"], "--multicrop-size 1 is below 8 px"),
    (["--progressive-start", "6", "--progressive-epochs", "1"], "--progressive-start 6 is not a multiple of 4"),
    (["--progressive-start", "8", "--progressive-epochs", "0"], "--progressive-start 8 needs --progressive-epochs"),
    (["--progressive-epochs", "3"], "--progressive-epochs 3 needs --progressive-start"),
])
def test_every_bad_setting_is_one_line_exit_2_before_work(args, message, image_tree, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)))
    (tmp_path / "bad.yaml").write_text("epochs: 3\n  batch_size: [\n")
    fill = {"file": str(tmp_path / "file"), "tree": str(image_tree), "binary": str(tmp_path / "binary.yaml"),
            "badyaml": str(tmp_path / "bad.yaml")}
    argv = ["pretrain", "--dataset", "images", "--data-dir", str(image_tree / "train"), "--out",
            str(tmp_path / "run"), *TINY]
    argv += [a.format(**fill) for a in args]
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "run").exists()


def test_malformed_run_folder_config_is_one_line(image_tree, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--dataset", "images", "--data-dir", str(image_tree / "train"), "--epochs", "1",
                 "--batch-size", "4", "--out", str(out), *TINY]) == 0
    (out / "config.yaml").write_text("backbone: [resnet18\n")
    capsys.readouterr()
    assert main(["knn", "--checkpoint", str(out), "--dataset", "folder", "--data-dir", str(image_tree),
                 "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.yaml" in err and "malformed" in err, err


def test_a_backbone_that_records_no_image_size_is_read_at_224_px_with_one_warning(image_tree, tmp_path, capsys):
    """A backbone saved from an own loop without its size used to be evaluated and traced at 224 px silently;
    `save_backbone(..., image_size=N)` records it, and a reader that falls back to 224 says so in one line."""
    import barlowtwins

    net = barlowtwins.create_backbone("resnet18", stem="small", width=8)
    plain = barlowtwins.save_backbone(net, tmp_path / "plain.safetensors")
    sized = barlowtwins.save_backbone(net, tmp_path / "sized.safetensors", image_size=16)
    knn = ["knn", "--dataset", "folder", "--data-dir", str(image_tree), "--k", "3", "--workers", "0", "--device",
           "cpu", "--no-cache"]
    assert main([*knn, "--checkpoint", str(plain), "--output", str(tmp_path / "a")]) == 0
    err = capsys.readouterr().err
    assert err.count("records no image size: using 224 px") == 1 and "--image-size" in err, err
    assert json.loads((tmp_path / "a" / "knn-folder.json").read_text())["image_size"] == 224
    assert main([*knn, "--checkpoint", str(sized), "--output", str(tmp_path / "b")]) == 0
    assert "image size" not in capsys.readouterr().err
    assert json.loads((tmp_path / "b" / "knn-folder.json").read_text())["image_size"] == 16
    assert main(["export", "--checkpoint", str(plain), "--format", "torchscript", "--output",
                 str(tmp_path / "x.pt")]) == 0
    assert "records no image size: using 224 px" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(sized), "--format", "torchscript", "--output",
                 str(tmp_path / "y.pt")]) == 0
    assert "image size" not in capsys.readouterr().err
