"""No-preset runs on small images get a fitting projector, stem and batch; explicit settings always win."""

import pytest

from barlowtwins.cli import main
from barlowtwins.training.autoconfig import fit_to_data, small_projector
from barlowtwins.training.config import PretrainConfig, config_from_dict, resolve_values


def fitted(flags: dict, preset=None):
    values = resolve_values(preset, None, flags)
    return fit_to_data(config_from_dict(values), set(values))


def test_small_projector_widths():
    assert small_projector(512) == "2048-2048-2048"  # ResNet-18
    assert small_projector(2048) == "2048-2048-2048"  # ResNet-50: capped
    assert small_projector(64) == "512-512-512"  # ResNet-18 at width 8: floor
    assert small_projector(160) == "1024-1024-1024"


def test_built_in_small_data_set_is_not_given_the_imagenet_recipe():
    cfg, note = fitted({"dataset": "cifar10", "backbone": "resnet18"})
    assert (cfg.image_size, cfg.stem, cfg.projector, cfg.batch_size) == (32, "small", "2048-2048-2048", 256)
    assert note.startswith("no preset: small images, not the ImageNet recipe: resnet18, 32 px")
    assert "--preset cifar10" in note
    cfg, _ = fitted({"dataset": "fashion-mnist", "backbone": "resnet18", "width": 8})
    assert (cfg.image_size, cfg.projector) == (28, "512-512-512")


def test_small_folder_images_get_the_pooled_stem():
    cfg, note = fitted({"dataset": "images", "data_dir": "x", "image_size": 64, "backbone": "resnet18",
                        "device": "cuda"})
    assert (cfg.image_size, cfg.stem, cfg.projector, cfg.batch_size) == (64, "small-pool", "2048-2048-2048", 256)
    assert "--stem, --projector, --batch-size" in note


@pytest.mark.parametrize("flags,kept", [
    ({"projector": "8192-8192-8192"}, {"projector": "8192-8192-8192", "batch_size": 256}),
    ({"batch_size": 64}, {"batch_size": 64, "projector": "2048-2048-2048"}),
    ({"stem": "standard"}, {"stem": "standard"}),
    ({"image_size": 224}, {"image_size": 224, "projector": "8192-8192-8192", "batch_size": 2048}),
])
def test_explicit_values_win(flags, kept):
    cfg, _ = fitted({"dataset": "cifar10", "backbone": "resnet18", **flags})
    for k, v in kept.items():
        assert getattr(cfg, k) == v, k


def test_large_images_keep_the_paper_recipe_and_say_so():
    cfg, note = fitted({"dataset": "images", "data_dir": "x", "device": "cuda"})
    assert cfg == config_from_dict({"dataset": "images", "data_dir": "x", "device": "cuda"})
    assert note == ("no preset: the paper's ImageNet recipe (resnet50, 224 px, stem standard, "
                    "projector 8192-8192-8192, batch 2048)")


def test_a_preset_decides():
    cfg, note = fitted({}, preset="imagenet")
    assert note is None and cfg.projector == "8192-8192-8192"
    cfg, note = fitted({"batch_size": 64}, preset="cifar10")
    assert note is None and cfg.batch_size == 64


def test_a_yaml_value_counts_as_explicit(tmp_path):
    (tmp_path / "my.yaml").write_text("dataset: cifar10\nbackbone: resnet18\nprojector: 4096-4096\n")
    values = resolve_values(None, str(tmp_path / "my.yaml"), {})
    cfg, _ = fit_to_data(config_from_dict(values), set(values))
    assert cfg.projector == "4096-4096" and cfg.batch_size == 256


def test_unknown_backbone_is_the_usual_one_line_error(capsys):
    assert main(["pretrain", "--dataset", "cifar10", "--backbone", "resnet5", "--print-config"]) == 2
    assert "unknown backbone 'resnet5'" in capsys.readouterr().err


def test_first_line_of_a_run_says_what_was_chosen(fmnist_dir, tmp_path, capsys):
    code = main(["pretrain", "--dataset", "fashion-mnist", "--data-dir", str(fmnist_dir), "--backbone", "resnet18",
                 "--width", "8", "--batch-size", "16", "--max-steps", "1", "--no-progress", "--workers", "0",
                 "--out", str(tmp_path / "r")])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("no preset: small images, not the ImageNet recipe: resnet18, 28 px, stem small, "
                               "projector 512-512-512, batch 16")
    assert PretrainConfig().projector == "8192-8192-8192"  # the defaults themselves are unchanged


# ---- the CPU recipe for a folder of images ----------------------------------------------------------------------
def test_a_folder_trained_on_the_cpu_gets_the_cpu_recipe_fitted_to_it(tmp_path):
    from conftest import make_image_folder

    from barlowtwins.training.autoconfig import CPU_FOLDER_RECIPE

    root = make_image_folder(tmp_path / "photos", classes=("a", "b"), per_class=20, size=40) / "train"
    cfg, note = fitted({"dataset": "images", "data_dir": str(root), "device": "cpu", "time_budget_minutes": 5})
    assert cfg.image_size == 40, "never above the images' own size"
    assert (cfg.backbone, cfg.width, cfg.stem, cfg.eta) == ("resnet18", CPU_FOLDER_RECIPE["width"], "small-pool", 0.02)
    assert cfg.batch_size == 16, "40 images: a batch that leaves several steps per epoch"
    assert note.startswith("no preset, training on the CPU: the CPU recipe for 40 images, typically 40 px")
    assert "--time-budget-minutes" not in note.split("flags override")[1]
    _, note = fitted({"dataset": "images", "data_dir": str(root), "device": "cpu"})
    assert note.endswith("set --time-budget-minutes to fit the schedule to the time you have")


def test_the_cpu_recipe_keeps_every_explicit_setting(tmp_path):
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "photos", per_class=300, size=200)
    cfg, _ = fitted({"dataset": "folder", "data_dir": str(root), "device": "cpu", "image_size": 96, "width": 32,
                     "batch_size": 64, "eta": 0.001})
    assert (cfg.image_size, cfg.width, cfg.batch_size, cfg.eta) == (96, 32, 64, 0.001)
    assert cfg.batch_size == 64
    cfg, _ = fitted({"dataset": "images", "data_dir": str(root), "device": "cpu"})
    assert (cfg.image_size, cfg.batch_size) == (48, 128)


def test_the_cpu_recipe_leaves_a_timm_backbone_alone(tmp_path):
    pytest.importorskip("timm")
    from conftest import make_image_folder

    root = make_image_folder(tmp_path / "photos", per_class=300, size=200)
    cfg, _ = fitted({"dataset": "images", "data_dir": str(root), "device": "cpu", "backbone": "timm:resnet10t"})
    assert (cfg.backbone, cfg.stem, cfg.width) == ("timm:resnet10t", "standard", None), "ResNet settings left alone"
