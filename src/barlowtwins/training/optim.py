"""LARS and the paper's learning-rate schedule, usable in any training loop.

    >>> groups = lars_param_groups(model, weight_lr=0.2, bias_lr=0.0048)    # lr per 256 samples
    >>> opt = LARS(groups, weight_decay=1.5e-6)
    >>> schedule = WarmupCosine(total_steps=epochs * steps_per_epoch, warmup_steps=10 * steps_per_epoch)
    >>> for step in ...:
    ...     set_learning_rates(opt, schedule(step) * batch_size / 256)
    ...     loss.backward(); opt.step(); opt.zero_grad()

LARS (You et al., 2017) as in the official Barlow Twins code: weight decay is added to the gradient, the
update is scaled by the trust ratio eta * ||w|| / ||g + wd * w||, then heavy-ball momentum. Groups with
``lars=False`` (biases and BN parameters in the paper's setting) skip both the trust ratio and weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn


def lars_param_groups(model: nn.Module, weight_lr: float = 0.2, bias_lr: float = 0.0048) -> list[dict]:
    """Split parameters as the paper does: weights (ndim > 1) and biases/BN parameters (ndim <= 1).

    ``base_lr`` is the learning rate for a batch of 256; :func:`set_learning_rates` scales it per step.
    """
    weights, others = [], []
    for p in model.parameters():
        if p.requires_grad:
            (weights if p.ndim > 1 else others).append(p)
    return [
        {"params": weights, "base_lr": weight_lr, "lars": True, "name": "weights"},
        {"params": others, "base_lr": bias_lr, "lars": False, "weight_decay": 0.0, "name": "biases_and_norms"},
    ]


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum.

    Args:
        params: parameters or groups; a group's ``lars=False`` excludes it from weight decay and from the
            trust ratio (see :func:`lars_param_groups`).
        lr: learning rate (usually overwritten every step by :func:`set_learning_rates`).
        weight_decay: L2 coefficient added to the gradient of ``lars=True`` groups (paper: 1.5e-6).
        momentum: heavy-ball momentum (paper: 0.9).
        eta: trust coefficient (paper: 0.001).
    """

    def __init__(self, params: Iterable, lr: float = 0.0, weight_decay: float = 1.5e-6, momentum: float = 0.9,
                 eta: float = 0.001):
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or eta <= 0:
            raise ValueError(f"LARS: invalid hyperparameters lr={lr} weight_decay={weight_decay} "
                             f"momentum={momentum} eta={eta}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True)
        super().__init__(params, defaults)
        for group in self.param_groups:
            group.setdefault("base_lr", group["lr"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if group["lars"]:
                if group["weight_decay"] != 0:
                    grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
                # Trust ratio per tensor, computed on device (no host sync): 1 where either norm is 0.
                p_norm = torch.stack(torch._foreach_norm(params))
                g_norm = torch.stack(torch._foreach_norm(grads))
                ones = torch.ones_like(p_norm)
                ratio = torch.where((p_norm > 0) & (g_norm > 0), group["eta"] * p_norm / g_norm, ones)
                grads = torch._foreach_mul(grads, list(ratio.to(grads[0].dtype).unbind(0)))
            bufs = []
            for p in params:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                bufs.append(state["momentum_buffer"])
            torch._foreach_mul_(bufs, group["momentum"])
            torch._foreach_add_(bufs, grads)
            torch._foreach_add_(params, bufs, alpha=-group["lr"])
        return loss


class WarmupCosine:
    """The official schedule as a multiplier of the base learning rate, per step.

    Linear warm-up from 0 over ``warmup_steps``, then a half cosine from 1 down to ``final_ratio``
    (paper: 10 warm-up epochs, final 1/1000). ``schedule(step)`` takes the 0-based global step.
    """

    def __init__(self, total_steps: int, warmup_steps: int, final_ratio: float = 0.001):
        if total_steps < 1:
            raise ValueError(f"schedule: total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.final_ratio = float(final_ratio)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return step / self.warmup_steps
        decay_steps = self.total_steps - self.warmup_steps
        progress = min((step - self.warmup_steps) / max(decay_steps, 1), 1.0)
        q = 0.5 * (1 + math.cos(math.pi * progress))
        return q + self.final_ratio * (1 - q)


OPTIMIZERS = ("lars", "adamw")


def build_optimizer(name: str, model: nn.Module, weight_lr: float, bias_lr: float, weight_decay: float,
                    momentum: float = 0.9, eta: float = 0.001) -> torch.optim.Optimizer:
    """The pretraining optimiser with the paper's parameter split (weights vs biases and norms).

    ``lars`` is the paper's. ``adamw`` (betas (``momentum``, 0.999)) is an option for short runs and small data;
    its weight decay, like LARS's, applies to the weights only. Base learning rates are per 256 samples.
    """
    groups = lars_param_groups(model, weight_lr, bias_lr)
    if name == "lars":
        return LARS(groups, weight_decay=weight_decay, momentum=momentum, eta=eta)
    if name == "adamw":
        for g in groups:  # the weights decay; biases and norms keep their 0
            g.setdefault("weight_decay", weight_decay)
        return torch.optim.AdamW(groups, lr=0.0, betas=(momentum, 0.999), weight_decay=0.0)
    raise ValueError(f"unknown optimizer '{name}'; choose one of {', '.join(OPTIMIZERS)}")


def set_learning_rates(optimizer: torch.optim.Optimizer, scale: float) -> None:
    """``lr = base_lr * scale`` for every group (scale = schedule multiplier x batch / 256).

    A group without ``base_lr`` (any torch optimiser) takes its initial ``lr`` as the base on the first call.
    """
    for group in optimizer.param_groups:
        group["lr"] = group.setdefault("base_lr", group["lr"]) * scale


def move_state_to_params(optimizer: torch.optim.Optimizer) -> None:
    """Put every optimiser state tensor on its parameter's device, floating-point ones in its dtype.

    ``Optimizer.load_state_dict`` places the state where the parameters are *at load time*; a model moved
    afterwards (a resumed run placed on its GPU, or cast) would leave momentum on the CPU beside CUDA gradients.
    Scalar ``step`` counters stay where they are (AdamW keeps them on the CPU unless capturable or fused).
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if not state:
                continue
            for key, value in state.items():
                if not isinstance(value, torch.Tensor) or (key == "step" and value.dim() == 0):
                    continue
                if value.is_floating_point() or value.is_complex():
                    state[key] = value.to(device=p.device, dtype=p.dtype)
                else:
                    state[key] = value.to(device=p.device)
