"""bf16 autocast on the CPU: numerics against float64, what stays float32, the exact resume, and how the run
reports the precision it chose (its first line, config.yaml, metrics.jsonl)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from conftest import tiny_config

from barlowtwins.cli import main
from barlowtwins.evaluate.backbone import load_eval_backbone
from barlowtwins.runtime.hardware import CPU_BF16_ENV
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.optim import build_optimizer, set_learning_rates
from barlowtwins.training.run import build_pretrain_model
from barlowtwins.training.step import optimizer_step
from barlowtwins.training.trainer import pretrain
from barlowtwins.weights.run_files import load_checkpoint

CPU = torch.device("cpu")


def _model_and_views(seed: int):
    torch.manual_seed(seed)
    cfg = PretrainConfig(image_size=16, backbone="resnet18", stem="small", width=16, projector="64-64",
                         batch_size=32)
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(32, 3, 16, 16, generator=g)  # two noisy views of the same images
    views = tuple(base + 0.1 * torch.randn(32, 3, 16, 16, generator=g) for _ in range(2))
    return cfg, build_pretrain_model(cfg), views


def _loss_and_grad(model, views, dtype):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
        result = model(*views, return_parts=True)
    result.loss.backward()
    return float(result.loss.detach()), torch.cat([p.grad.flatten().double() for p in model.parameters()])


@pytest.mark.parametrize("seed", [0, 1])
def test_bf16_loss_and_gradients_against_float64(seed):
    """Tolerance: the loss within 2 % of float64's, the gradient's direction within cosine 0.97 of it (measured:
    0.4-0.7 % and 0.986-0.990 on three seeds; float32 is within 1e-6 and 1 - 1e-11). The gradient of a
    randomly initialised ResNet is that sensitive to its input: rounding only the views to bf16 moves it as much."""
    _, model, views = _model_and_views(seed)
    loss64, grad64 = _loss_and_grad(copy.deepcopy(model).double(), tuple(v.double() for v in views), None)
    loss32, grad32 = _loss_and_grad(copy.deepcopy(model), views, None)
    loss16, grad16 = _loss_and_grad(copy.deepcopy(model), views, torch.bfloat16)
    cos = lambda a, b: float(torch.nn.functional.cosine_similarity(a, b, dim=0))  # noqa: E731
    assert abs(loss32 - loss64) / loss64 < 1e-5 and cos(grad32, grad64) > 1 - 1e-8
    assert abs(loss16 - loss64) / loss64 < 0.02
    assert cos(grad16, grad64) > 0.97
    assert loss16 != loss32  # bf16 did run


def test_a_bf16_step_keeps_weights_gradients_state_statistics_and_loss_in_float32():
    cfg, model, (x1, x2) = _model_and_views(0)
    opt = build_optimizer(cfg.optimizer, model, cfg.lr_weights, cfg.lr_biases, cfg.weight_decay, cfg.momentum,
                          cfg.eta)
    set_learning_rates(opt, 0.1)
    before = copy.deepcopy(model.state_dict())
    result = optimizer_step(model, opt, CPU, torch.bfloat16, x1, x2)
    assert result.loss.dtype == torch.float32 and result.on_diag.dtype == torch.float32
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    assert all(s["momentum_buffer"].dtype == torch.float32 for s in opt.state.values())
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.running_mean.dtype == m.running_var.dtype == torch.float32 for m in bn)
    assert not torch.equal(bn[0].running_mean, before[next(k for k in before if k.endswith("running_mean"))])
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert len(changed) > len(before) // 2  # the step moved the float32 weights


def test_a_bf16_run_resumes_bit_identically_saves_float32_and_says_what_ran(fmnist_dir, tmp_path, monkeypatch,
                                                                            capsys):
    monkeypatch.setenv(CPU_BF16_ENV, "1")  # a CPU with native bf16, whatever this one has
    straight = pretrain(tiny_config(fmnist_dir, tmp_path / "a"))
    first = capsys.readouterr().out.splitlines()[0]
    assert first == ("training on cpu (1 process) in bf16 autocast (auto: this CPU does bf16 natively, "
                     "AVX512-BF16 (BARLOWTWINS_CPU_BF16=1))")
    pretrain(tiny_config(fmnist_dir, tmp_path / "b", max_steps=3))
    resumed = pretrain(tiny_config(fmnist_dir, tmp_path / "b"))
    assert straight["step"] == resumed["step"] == 8
    a, b = (load_checkpoint(tmp_path / r / "checkpoint.pth") for r in "ab")
    assert all(torch.equal(b["model"][k], v) for k, v in a["model"].items())
    for pid, state in a["optimizer"]["state"].items():
        assert torch.equal(b["optimizer"]["state"][pid]["momentum_buffer"], state["momentum_buffer"])
    assert {v.dtype for v in a["model"].values() if v.is_floating_point()} == {torch.float32}

    text = (tmp_path / "a" / "config.yaml").read_text()
    assert "precision: auto  # ran bf16 autocast (auto: this CPU does bf16 natively" in text
    assert yaml.safe_load(text)["precision"] == "auto"  # the value stays what was asked: the comment is a note
    start = json.loads((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["precision"] == "bf16"
    assert "natively" in start["precision_reason"]

    monkeypatch.setenv(CPU_BF16_ENV, "0")  # the same run as float32 differs: bf16 did run above
    pretrain(tiny_config(fmnist_dir, tmp_path / "c"))
    c = load_checkpoint(tmp_path / "c" / "checkpoint.pth")
    assert any(not torch.equal(c["model"][k], v) for k, v in a["model"].items() if v.is_floating_point())
    assert "in fp32 (auto: this CPU has no native bf16, neither AVX512-BF16 nor AMX)" in capsys.readouterr().out


def test_bf16_asked_on_a_cpu_without_it_is_one_line_before_the_run_folder(fmnist_dir, tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    out = tmp_path / "run"
    code = main(["pretrain", "--dataset", "fashion-mnist", "--data-dir", str(fmnist_dir), "--precision", "bf16",
                 "--image-size", "16", "--width", "8", "--epochs", "1", "--batch-size", "16", "--no-progress",
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.strip() == ("barlowtwins pretrain: error: --precision bf16: this CPU has no native bf16 (AVX512-BF16 "
                           "or AMX), where bf16 is emulated and slower than float32; use --precision auto or fp32")
    assert not out.exists()


def test_evaluation_extracts_features_in_the_same_precision(run_dir, monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert load_eval_backbone(str(run_dir), device="cpu", cache_dir=None).amp_dtype == torch.bfloat16
    assert load_eval_backbone(str(run_dir), device="cpu", precision="fp32", cache_dir=None).amp_dtype is None
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert load_eval_backbone(str(run_dir), device="cpu", cache_dir=None).amp_dtype is None


def test_a_resume_in_another_precision_says_so(fmnist_dir, tmp_path, monkeypatch, capsys):
    """``auto`` resumed on a processor without native bf16: the run goes on in float32, said in one warning."""
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    pretrain(tiny_config(fmnist_dir, tmp_path / "r", max_steps=3))
    assert load_checkpoint(tmp_path / "r" / "checkpoint.pth")["precision"] == "bf16"
    capsys.readouterr()
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    pretrain(tiny_config(fmnist_dir, tmp_path / "r"))
    err = capsys.readouterr().err
    assert ("warning: this run trained in bf16 up to step 3 and goes on in fp32 (auto: this CPU has no native bf16, "
            "neither AVX512-BF16 nor AMX): it will not end bit-identical") in err
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    pretrain(tiny_config(fmnist_dir, tmp_path / "s", max_steps=3))
    capsys.readouterr()
    pretrain(tiny_config(fmnist_dir, tmp_path / "s"))
    assert "warning: this run trained in" not in capsys.readouterr().err
