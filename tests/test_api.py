"""The top-level API in a user's own loop: every trap the issue lists has a test that the old behaviour fails."""

import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from PIL import Image

import barlowtwins as bt
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.optim import build_optimizer


def tiny_model():
    torch.manual_seed(0)
    return bt.build_model("resnet18", "32-32", stem="small", width=8)


def test_top_level_exports():
    for name in ("build_pipeline", "save_backbone", "load_backbone", "image_folder", "build_dataset",
                 "BarlowTwinsLoss", "LARS", "lars_param_groups", "WarmupCosine", "TwoViewTransform",
                 "create_backbone", "Projector", "build_model"):
        assert name in bt.__all__ and callable(getattr(bt, name)), name
    assert all(hasattr(bt, name) for name in bt.__all__)
    assert bt.build_pipeline.__module__ == "barlowtwins.data.pipeline"
    assert bt.save_backbone.__module__ == "barlowtwins.weights.save"


def test_a_bare_optimizer_step_trains():
    model = tiny_model()
    opt = bt.LARS(bt.lars_param_groups(model))
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.0048]  # the paper's base rates, not 0
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    model(torch.randn(4, 3, 16, 16), torch.randn(4, 3, 16, 16)).backward()
    opt.step()
    changed = [k for k, p in model.named_parameters() if not torch.equal(p, before[k])]
    assert "backbone.conv1.weight" in changed and "projector.1.bias" in changed  # a weight and a BN bias
    given = bt.LARS(bt.lars_param_groups(model, lr_weights=0.5, lr_biases=0.01))
    assert [g["lr"] for g in given.param_groups] == [0.5, 0.01]


def test_loss_backward_works():
    z1 = torch.randn(8, 16, requires_grad=True)
    z2 = torch.randn(8, 16, requires_grad=True)
    loss = bt.BarlowTwinsLoss()(z1, z2)
    loss.backward()
    assert loss.ndim == 0 and z1.grad is not None and torch.isfinite(z1.grad).all()
    parts = bt.BarlowTwinsLoss()(z1, z2, return_parts=True)
    assert parts.loss.item() == pytest.approx(parts.on_diag.item() + 0.0051 * parts.off_diag.item(), rel=1e-5)


def _write_jpegs(folder, n=3, size=40):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size + i, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return folder


def test_image_folder_with_a_two_view_transform(tmp_path):
    ds = bt.image_folder(_write_jpegs(tmp_path / "imgs"), transform=bt.TwoViewTransform(image_size=32))
    (x1, x2), label = ds[2]
    assert label == -1 and x1.shape == x2.shape == (3, 32, 32) and x1.dtype == torch.float32
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    (b1, b2), labels = next(iter(loader))
    assert b1.shape == (3, 3, 32, 32) and labels.tolist() == [-1, -1, -1]


def test_two_view_transform_on_a_pil_image():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 60, 3), dtype=np.uint8))
    v1, v2 = bt.TwoViewTransform(image_size=32)(img)
    assert v1.shape == v2.shape == (3, 32, 32) and not torch.equal(v1, v2)


def paper_schedule(step, total, warmup, final):
    """The documented formula, written here independently: linear warm-up, then cosine down to ``final``."""
    if step < warmup:
        return step / warmup
    t = min(1.0, (step - warmup) / (total - warmup))
    return final + (1 - final) * (1 + math.cos(math.pi * t)) / 2


def test_warmup_cosine_is_an_lr_scheduler_with_the_paper_schedule():
    model = tiny_model()
    opt = bt.LARS(bt.lars_param_groups(model))
    sched = bt.WarmupCosine(opt, total_steps=50, warmup_steps=10, scale=512 / 256)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    lrs = {}
    for step in range(60):
        lrs[step] = [g["lr"] for g in opt.param_groups]
        opt.step()
        sched.step()
    for step in (0, 3, 10, 11, 30, 49, 50, 59):
        m = paper_schedule(step, 50, 10, 0.001)
        assert lrs[step] == pytest.approx([0.2 * 2 * m, 0.0048 * 2 * m], rel=1e-9, abs=1e-15), step
    assert lrs[50][0] == pytest.approx(0.2 * 2 / 1000)  # the end: 1/1000 of the (scaled) base rate


def test_learning_rate_names_match_the_config():
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    for fn in (bt.lars_param_groups, build_optimizer):
        names = set(inspect.signature(fn).parameters)
        assert {"lr_weights", "lr_biases"} <= names and {"lr_weights", "lr_biases"} <= fields
        assert not names & {"weight_lr", "bias_lr"}


def test_save_backbone_round_trip_needs_no_flags(tmp_path):
    net = bt.create_backbone("resnet18", stem="small", width=8)
    bt.save_backbone(net, tmp_path / "b.safetensors")
    loaded = bt.load_backbone(tmp_path / "b.safetensors")
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net.eval()(x), rtol=0, atol=0)


def test_build_pipeline_gives_two_views_of_a_batch(tmp_path):
    from conftest import make_fashion_mnist

    ds = bt.build_dataset("fashion-mnist", make_fashion_mnist(tmp_path / "fm", n_train=16, n_test=4))
    pipe = bt.build_pipeline(ds, bt.augment_config(28, 1), batch_size=8, seed=0, workers=0)
    batch, labels, _ = next(iter(pipe.epoch(0)))
    x1, x2 = pipe.views(batch, 0)
    assert len(pipe) == 2 and x1.shape == x2.shape == (8, 3, 28, 28) and labels.shape == (8,)


def test_recipe_for_is_the_plan_of_the_cli(tmp_path, capsys):
    """The short-run recipe the CLI plans could not be asked for from Python; `recipe_for` is the same plan."""
    import yaml
    from conftest import make_image_folder

    from barlowtwins.cli import main
    from barlowtwins.training.autoconfig import plan_config

    data = make_image_folder(tmp_path / "imgs", per_class=8, size=24, splits=("train",)) / "train"
    cfg = bt.recipe_for(data, device="cpu", time_budget_minutes=5)
    assert cfg == plan_config({"dataset": "images", "data_dir": str(data), "device": "cpu",
                               "time_budget_minutes": 5})[0]
    assert (cfg.backbone, cfg.width, cfg.image_size, cfg.batch_size, cfg.eta) == ("resnet18", 16, 24, 16, 0.02)
    assert main(["pretrain", "--dataset", "images", "--data-dir", str(data), "--device", "cpu",
                 "--time-budget-minutes", "5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert all(printed[k] == v for k, v in cfg.to_dict().items() if v is not None and k not in ("crop_scale",))
    assert printed["crop_scale"] == list(cfg.crop_scale)
    small = bt.recipe_for("cifar10", device="cuda")  # a built-in data set: its size, a fitting network
    assert (small.dataset, small.image_size, small.stem, small.projector, small.batch_size) == \
        ("cifar10", 32, "small", "2048-2048-2048", 256)
    assert bt.recipe_for(preset="cifar10", epochs=3) == bt.PretrainConfig(preset="cifar10", epochs=3)
    assert "recipe_for" in bt.__doc__ and "recipe_for" in bt.__all__
