"""The finiteness guard: which tensors are non-finite, and a divergence message that fits the cause."""

import torch

from barlowtwins.runtime.finite import nonfinite_names
from barlowtwins.training.finite import divergence_hint, divergence_message, training_state_tensors
from barlowtwins.training.optim import LARS, lars_param_groups


def test_training_state_covers_parameters_buffers_and_optimizer_state():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    opt = LARS(lars_param_groups(net))
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    names = [n for n, _ in training_state_tensors(net, opt)]
    assert "0.weight" in names and "1.running_var" in names
    assert any(n.startswith("optimizer[0.weight].momentum_buffer") for n in names)
    opt.state[net[0].weight]["momentum_buffer"][0, 0] = float("inf")
    assert nonfinite_names(training_state_tensors(net, opt)) == ["optimizer[0.weight].momentum_buffer"]


def test_hints_fit_the_cause():
    kw = dict(lr_weights=0.2, lr_biases=0.0048, eta=0.001, optimizer="lars")
    assert "--mean/--std" in divergence_hint(first_steps=True, weights_only=False, amp=False, **kw)
    assert "overflowed the weights" in divergence_hint(first_steps=False, weights_only=True, amp=False, **kw)
    assert "--precision fp32" in divergence_hint(first_steps=False, weights_only=False, amp=True, **kw)
    assert "--eta" not in divergence_hint(first_steps=False, weights_only=False, amp=False,
                                          **{**kw, "optimizer": "adamw"})
    msg = divergence_message(step=13, what="the loss", loss={"loss": float("nan"), "on_diag": 1.0,
                                                            "off_diag": float("inf")},
                             lrs=[0.5, 0.01], last_good="the last good checkpoint is x (step 8)", hint="lower it")
    assert "step 13" in msg and "on-diagonal 1" in msg and "off-diagonal inf" in msg and "0.5, 0.01" in msg
    assert "\n" not in msg
