"""`barlowtwins pretrain` through the command line: what it prints when a run finishes or reaches --max-steps
(and how to load the backbone), the exit statuses, and `--print-config` with the values a run derives."""

import yaml

from barlowtwins.cli import main
from barlowtwins.cli.pretrain import printed_config
from barlowtwins.training.config import PretrainConfig, config_from_dict

TINY = ["--dataset", "fashion-mnist", "--image-size", "16", "--backbone", "resnet18", "--width", "8", "--stem",
        "small", "--projector", "32-32", "--batch-size", "16", "--epochs", "1", "--no-progress", "--workers", "0"]


def test_a_finished_run_says_where_its_backbone_is_and_how_to_load_it(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, "--data-dir", str(fmnist_dir), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "pretrained 4 steps in " in lines[-2] and f"backbone: {out}/backbone.pth (and .safetensors)" in lines[-2]
    assert lines[-1] == f"load it: barlowtwins.load_backbone({str(out)!r})"  # a small-stem net: not torchvision's
    assert (out / "backbone.pth").is_file() and (out / "backbone.safetensors").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["width"] == 8 and saved["epochs"] == 1 and saved["dataset"] == "fashion-mnist"


def test_max_steps_stops_with_exit_0_and_a_rerun_continues(fmnist_dir, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["pretrain", *TINY, "--data-dir", str(fmnist_dir), "--out", str(out), "--epochs", "2"]
    assert main([*argv, "--max-steps", "3"]) == 0
    printed = capsys.readouterr().out
    assert "reached --max-steps 3 at step 3 of the 8-step schedule" in printed and "pretrained" not in printed
    assert main(argv) == 0  # the same command without --max-steps resumes and finishes
    assert "pretrained 8 steps" in capsys.readouterr().out


def test_print_config_prints_a_config_that_reads_back_and_runs_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", *TINY, "--out", str(out), "--multicrop-count", "2", "--print-config"]) == 0
    text = capsys.readouterr().out
    values = yaml.safe_load(text)
    assert values["multicrop_count"] == 2 and values["multicrop_size"] and values["multicrop_scale"]
    derived = [line.split(":")[0] for line in text.splitlines() if "# derived from image_size 16" in line]
    assert "multicrop_size" in derived and "multicrop_scale" in derived and "width" not in derived
    config_from_dict(values)  # valid input for --config
    assert not out.exists()


def test_printed_config_marks_only_the_fields_left_unset():
    cfg = PretrainConfig(dataset="fashion-mnist", image_size=16, backbone="resnet18", stem="small", width=8,
                         projector="32-32", hue=0.05)
    text = printed_config(cfg)
    lines = {line.split(":")[0]: line for line in text.splitlines() if not line.startswith("#")}
    assert "derived" not in lines["hue"] and "derived from image_size 16, 1 channel(s)" in lines["saturation"]
    assert text.splitlines()[0].startswith("# augmentation fields marked 'derived' were not set")
    assert lines["crop_scale"].startswith("crop_scale: [")  # lists on one line
