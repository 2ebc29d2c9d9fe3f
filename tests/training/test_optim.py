"""LARS and the schedule against hand-computed steps."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from barlowtwins.models.backbones import create_backbone
from barlowtwins.training.optim import (
    LARS,
    CosineSchedule,
    WarmupCosine,
    build_optimizer,
    lars_param_groups,
    set_learning_rates,
    warmup_cosine,
)


def hand_lars(w, grads, lr, wd, momentum, eta, adapt):
    """LARS by hand in float64: d = g + wd w; d *= eta ||w|| / ||d||; mu = m mu + d; w -= lr mu."""
    w = np.array(w, dtype=np.float64)
    mu = np.zeros_like(w)
    for g in grads:
        d = np.array(g, dtype=np.float64)
        if adapt:
            d = d + wd * w
            pn, dn = np.linalg.norm(w), np.linalg.norm(d)
            q = eta * pn / dn if pn > 0 and dn > 0 else 1.0
            d = d * q
        mu = momentum * mu + d
        w = w - lr * mu
    return w


def test_lars_matches_hand_computed_steps():
    rng = np.random.default_rng(0)
    w0, b0 = rng.normal(size=(4, 3)), rng.normal(size=(3,))
    wgrads = [rng.normal(size=(4, 3)) for _ in range(3)]
    bgrads = [rng.normal(size=(3,)) for _ in range(3)]
    w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    b = nn.Parameter(torch.tensor(b0, dtype=torch.float64))
    opt = LARS([{"params": [w], "lars": True}, {"params": [b], "lars": False, "weight_decay": 0.0}],
               lr=0.7, weight_decay=0.01, momentum=0.9, eta=0.02)
    for gw, gb in zip(wgrads, bgrads):
        w.grad = torch.tensor(gw)
        b.grad = torch.tensor(gb)
        opt.step()
    np.testing.assert_allclose(w.detach().numpy(), hand_lars(w0, wgrads, 0.7, 0.01, 0.9, 0.02, True), rtol=1e-12)
    np.testing.assert_allclose(b.detach().numpy(), hand_lars(b0, bgrads, 0.7, 0.0, 0.9, 0.02, False), rtol=1e-12)


def test_trust_ratio_is_one_for_zero_weights():
    w = nn.Parameter(torch.zeros(3, 3, dtype=torch.float64))
    opt = LARS([w], lr=0.5, weight_decay=0.0, momentum=0.0, eta=0.001)
    w.grad = torch.ones(3, 3, dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.full((3, 3), -0.5, dtype=torch.float64))


def test_param_groups_split_weights_from_biases_and_norms():
    net = create_backbone("resnet18")
    groups = lars_param_groups(net, lr_weights=0.2, lr_biases=0.0048)
    weights, others = groups
    assert all(p.ndim > 1 for p in weights["params"]) and all(p.ndim == 1 for p in others["params"])
    n_conv = sum(1 for m in net.modules() if isinstance(m, nn.Conv2d))
    n_bn = sum(1 for m in net.modules() if isinstance(m, nn.BatchNorm2d))
    assert len(weights["params"]) == n_conv and len(others["params"]) == 2 * n_bn
    assert weights["lars"] and not others["lars"] and others["weight_decay"] == 0.0
    assert (weights["base_lr"], others["base_lr"]) == (0.2, 0.0048)
    assert (weights["lr"], others["lr"]) == (0.2, 0.0048)  # they start at their base rate


def test_excluded_group_gets_no_weight_decay():
    opt = LARS(lars_param_groups(nn.Sequential(nn.BatchNorm1d(4)))[1:], lr=0.1, weight_decay=0.5, momentum=0.0)
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.zeros_like(p)
    before = [p.detach().clone() for p in opt.param_groups[0]["params"]]
    opt.step()
    for p, q in zip(opt.param_groups[0]["params"], before):
        torch.testing.assert_close(p.detach(), q)  # zero gradient, no decay: unchanged


def test_schedule_by_hand():
    s = CosineSchedule(total_steps=100, warmup_steps=10, final_ratio=0.001)
    assert s(0) == 0.0
    assert s(5) == pytest.approx(0.5)
    assert s(10) == pytest.approx(1.0)
    # Half way through the decay: q = 0.5, lr = 0.5 + 0.001 * 0.5
    assert s(55) == pytest.approx(0.5005)
    assert s(100) == pytest.approx(0.001)
    q = 0.5 * (1 + math.cos(math.pi * 30 / 90))
    assert s(40) == pytest.approx(q + 0.001 * (1 - q))
    assert all(s(i) >= s(i + 1) for i in range(10, 100))


def test_schedule_edge_cases():
    assert CosineSchedule(total_steps=5, warmup_steps=50)(4) == pytest.approx(0.8)  # warm-up capped at the run
    assert CosineSchedule(total_steps=1, warmup_steps=0)(0) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        CosineSchedule(total_steps=0, warmup_steps=0)
    assert warmup_cosine(5, 5, 50) == pytest.approx(1.0)  # the function caps the warm-up the same way


def test_scheduler_scales_each_group_from_its_base_rate_like_the_pure_schedule():
    net = nn.Linear(3, 2)
    opt = LARS(lars_param_groups(net, 0.3, 0.01))
    sched = WarmupCosine(opt, total_steps=20, warmup_steps=4, final_ratio=0.01, scale=2.0)
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    pure = CosineSchedule(20, 4, 0.01)
    for step in range(25):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * 2.0 * pure(step))
        assert opt.param_groups[1]["lr"] == pytest.approx(0.01 * 2.0 * pure(step))
        assert sched.get_last_lr() == pytest.approx([0.6 * pure(step), 0.02 * pure(step)])
        opt.step()
        sched.step()


def test_scheduler_resumes_from_its_state_dict(tmp_path):
    net = nn.Linear(3, 2)
    opt = LARS(lars_param_groups(net))
    sched = WarmupCosine(opt, total_steps=30, warmup_steps=5)
    for _ in range(12):
        opt.step()
        sched.step()
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "state.pth")
    state = torch.load(tmp_path / "state.pth", weights_only=True)  # plain data: no pickled classes
    opt2 = LARS(lars_param_groups(net))
    sched2 = WarmupCosine(opt2, total_steps=30, warmup_steps=5)
    opt2.load_state_dict(state["opt"])
    sched2.load_state_dict(state["sched"])
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]


def test_scheduler_keeps_the_base_rate_after_set_learning_rates():
    opt = LARS(lars_param_groups(nn.Linear(3, 2), 0.2, 0.0048))
    set_learning_rates(opt, 0.0)  # a trainer that zeroed the rates first: the base is still the group's base_lr
    WarmupCosine(opt, total_steps=10, warmup_steps=0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2) and opt.param_groups[1]["lr"] == pytest.approx(0.0048)


def test_set_learning_rates_scales_each_group_base():
    net = nn.Linear(3, 2)
    opt = LARS(lars_param_groups(net, 0.2, 0.0048))
    set_learning_rates(opt, 0.5 * 2048 / 256)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2 * 4)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.0048 * 4)
    sgd = torch.optim.SGD(net.parameters(), lr=0.1)
    set_learning_rates(sgd, 0.5)
    set_learning_rates(sgd, 0.5)  # a base, not a compounding factor
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.05)


def test_lars_state_dict_round_trip_is_safe_to_load(tmp_path):
    net = nn.Linear(3, 2)
    opt = LARS(lars_param_groups(net))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pth")
    state = torch.load(tmp_path / "opt.pth", weights_only=True)
    opt2 = LARS(lars_param_groups(net))
    opt2.load_state_dict(state)
    assert torch.equal(opt2.state[net.weight]["momentum_buffer"], opt.state[net.weight]["momentum_buffer"])


def hand_adamw(w, grads, lr, wd, beta1, beta2=0.999, eps=1e-8):
    """AdamW by hand in float64 (decoupled decay: w <- w (1 - lr wd), then the bias-corrected Adam step)."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w *= 1 - lr * wd
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        w -= lr * (m / (1 - beta1 ** t)) / (np.sqrt(v / (1 - beta2 ** t)) + eps)
    return w


def test_adamw_option_decays_weights_only_and_matches_hand_computed_steps():
    torch.manual_seed(0)
    net = nn.Linear(4, 3).double()
    w0, b0 = net.weight.detach().numpy().copy(), net.bias.detach().numpy().copy()
    opt = build_optimizer("adamw", net, lr_weights=0.02, lr_biases=0.01, weight_decay=0.1, momentum=0.8)
    assert isinstance(opt, torch.optim.AdamW)
    wgrads, bgrads = [], []
    for _ in range(3):
        set_learning_rates(opt, 0.5)
        opt.zero_grad()
        net(torch.randn(5, 4, dtype=torch.float64)).square().sum().backward()
        wgrads.append(net.weight.grad.numpy().copy())
        bgrads.append(net.bias.grad.numpy().copy())
        opt.step()
    np.testing.assert_allclose(net.weight.detach().numpy(), hand_adamw(w0, wgrads, 0.01, 0.1, 0.8), rtol=1e-10)
    np.testing.assert_allclose(net.bias.detach().numpy(), hand_adamw(b0, bgrads, 0.005, 0.0, 0.8), rtol=1e-10)


def test_build_optimizer_defaults_to_lars_and_names_unknown_ones():
    net = nn.Linear(3, 2)
    opt = build_optimizer("lars", net, 0.2, 0.0048, 1.5e-6, eta=0.02)
    assert isinstance(opt, LARS) and opt.param_groups[0]["eta"] == 0.02
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        build_optimizer("adam", net, 0.2, 0.0048, 0.0)


@pytest.mark.parametrize("name", ["lars", "adamw"])
# (Moving a module to the meta device replaces its Parameter objects, which no optimiser survives: dtypes it is.)
@pytest.mark.parametrize("target", [dict(dtype=torch.float64), dict(dtype=torch.bfloat16)])
def test_optimizer_state_follows_a_moved_model(name, target):
    """The resume order (load the state on the CPU, then place the model) leaves the state behind unless moved:
    after `move_state_to_params` every state tensor is on its parameter's device, in its dtype."""
    from barlowtwins.training.optim import move_state_to_params

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt = build_optimizer(name, net, 0.2, 0.01, 1e-6)
    set_learning_rates(opt, 1.0)
    net(torch.randn(8, 4)).square().sum().backward()
    opt.step()
    saved = opt.state_dict()

    net2 = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))
    opt2 = build_optimizer(name, net2, 0.2, 0.01, 1e-6)
    opt2.load_state_dict(saved)  # on the CPU, in float32
    net2.to(**target)
    move_state_to_params(opt2)
    moved = 0
    for p in net2.parameters():
        for key, value in opt2.state[p].items():
            if key == "step" and value.dim() == 0:
                continue  # AdamW's scalar step counter stays on the CPU by design
            assert value.device == p.device and value.dtype == p.dtype, (key, value.device, value.dtype)
            moved += 1
    assert moved >= len(list(net2.parameters()))
    if target.get("dtype") is torch.float64:  # values survive the move (compared in float64)
        for p_old, p_new in zip(net.parameters(), net2.parameters()):
            for key, value in opt.state[p_old].items():
                if key != "step":
                    torch.testing.assert_close(opt2.state[p_new][key], value.double())


def test_the_param_groups_take_the_optimisers_rate_unless_given_their_own():
    """``torch.optim.AdamW(lars_param_groups(m), lr=1e-3)`` trains at 1e-3 (not at the paper's 0.2 / 0.0048 the
    groups used to carry), with no weight decay on biases and norms; LARS without an lr still gets the paper's
    rates, and the trainer's optimisers (explicit rates) are unchanged."""
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    adamw = torch.optim.AdamW(lars_param_groups(model), lr=1e-3, weight_decay=0.05)
    assert [g["lr"] for g in adamw.param_groups] == [1e-3, 1e-3]
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    sched = WarmupCosine(adamw, total_steps=10, warmup_steps=0)
    assert sched.get_last_lr() == [1e-3, 1e-3]  # the scheduler starts from the optimiser's rate too
    assert [g["lr"] for g in LARS(lars_param_groups(model)).param_groups] == [0.2, 0.0048]  # the paper's
    assert [g["lr"] for g in LARS(lars_param_groups(model), lr=0.1).param_groups] == [0.1, 0.1]  # what it says
    given = lars_param_groups(model, lr_weights=0.5, lr_biases=0.01)
    assert [g["lr"] for g in torch.optim.AdamW(given, lr=1e-3).param_groups] == [0.5, 0.01]  # asked for
    for name in ("lars", "adamw"):
        opt = build_optimizer(name, model, 0.3, 0.007, 1e-6)
        assert [(g["lr"], g["base_lr"]) for g in opt.param_groups] == [(0.3, 0.3), (0.007, 0.007)], name


def test_warmup_cosine_takes_the_batch_size_of_rates_per_256_samples():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    by_batch = LARS(lars_param_groups(model))
    sched = WarmupCosine(by_batch, total_steps=20, warmup_steps=0, batch_size=512)
    assert sched.scale == 2.0 and [g["lr"] for g in by_batch.param_groups] == pytest.approx([0.4, 0.0096])
    by_scale = LARS(lars_param_groups(model))
    WarmupCosine(by_scale, total_steps=20, warmup_steps=0, scale=2.0)
    assert [g["lr"] for g in by_scale.param_groups] == [g["lr"] for g in by_batch.param_groups]
    with pytest.raises(ValueError, match="batch_size .* or scale"):
        WarmupCosine(LARS(lars_param_groups(model)), 20, 0, scale=2.0, batch_size=512)
    with pytest.raises(ValueError, match="whole number"):
        WarmupCosine(LARS(lars_param_groups(model)), 20, 0, batch_size=0)
