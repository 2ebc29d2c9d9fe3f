"""LARS and the paper's learning-rate schedule, usable in any training loop.

    >>> opt = LARS(lars_param_groups(model))      # the paper's base rates per 256 samples: 0.2 / 0.0048
    >>> sched = WarmupCosine(opt, total_steps=epochs * steps_per_epoch, warmup_steps=10 * steps_per_epoch,
    ...                      batch_size=batch_size)  # every rate x batch_size / 256
    >>> for x1, x2 in batches:
    ...     model(x1, x2).backward(); opt.step(); opt.zero_grad(); sched.step()

`lars_param_groups` only splits the parameters (and takes the biases' and norms' weight decay off): without rates
of its own a group takes the optimiser's, so ``torch.optim.AdamW(lars_param_groups(model), lr=1e-3)`` trains
both at 1e-3, and ``LARS(lars_param_groups(model))`` (no ``lr``) the paper's 0.2 (weights) and 0.0048 (biases
and norms), each group's ``default_lr``. Every group starts at its base rate (``group["base_lr"]``), so a bare
``opt.step()`` trains; the scheduler (or :func:`set_learning_rates`) scales each group from that base.

LARS (You et al., 2017) as in the official Barlow Twins code: weight decay is added to the gradient, the
update is scaled by the trust ratio eta * ||w|| / ||g + wd * w||, then heavy-ball momentum. Groups with
``lars=False`` (biases and BN parameters in the paper's setting) skip both the trust ratio and weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

PAPER_LR_WEIGHTS, PAPER_LR_BIASES = 0.2, 0.0048  # the paper's base rates per 256 samples


def lars_param_groups(model: nn.Module, lr_weights: float | None = None,
                      lr_biases: float | None = None) -> list[dict]:
    """Split parameters as the paper does: weights (ndim > 1) and biases/BN parameters (ndim <= 1, no weight
    decay: ``weight_decay=0`` and ``lars=False`` in their group).

    A rate given here becomes that group's ``lr`` and ``base_lr`` (the paper's are 0.2 and 0.0048 per 256
    samples); a group without one takes the optimiser's ``lr``: ``torch.optim.AdamW(lars_param_groups(model),
    lr=1e-3)`` trains both groups at 1e-3. Such a group carries the paper's rate as ``default_lr``, which only
    `LARS` reads, when it is given no ``lr`` at all: ``LARS(lars_param_groups(model))`` trains at 0.2 and 0.0048.
    :class:`WarmupCosine` or :func:`set_learning_rates` scale the rates per step.
    """
    weights: list[nn.Parameter] = []
    others: list[nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (weights if p.ndim > 1 else others).append(p)
    groups = [{"params": weights, "lars": True, "name": "weights"},
              {"params": others, "lars": False, "weight_decay": 0.0, "name": "biases_and_norms"}]
    for group, lr, paper in zip(groups, (lr_weights, lr_biases), (PAPER_LR_WEIGHTS, PAPER_LR_BIASES)):
        if lr is not None:
            group.update(lr=lr, base_lr=lr)
        else:
            group["default_lr"] = paper
    return groups


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling with momentum.

    Args:
        params: parameters or groups; a group's ``lars=False`` excludes it from weight decay and from the
            trust ratio (see :func:`lars_param_groups`).
        lr: learning rate of every group that does not give its own. Without it, such a group takes its
            ``default_lr`` (:func:`lars_param_groups` gives the paper's 0.2 for weights and 0.0048 for biases and
            norms), else the paper's 0.2. It is each group's ``base_lr``, which a scheduler
            (:class:`WarmupCosine`) or :func:`set_learning_rates` scales per step.
        weight_decay: L2 coefficient added to the gradient of ``lars=True`` groups (paper: 1.5e-6).
        momentum: heavy-ball momentum (paper: 0.9).
        eta: trust coefficient (paper: 0.001).
    """

    def __init__(self, params: Iterable, lr: float | None = None, weight_decay: float = 1.5e-6,
                 momentum: float = 0.9, eta: float = 0.001):
        given = lr is not None
        lr = PAPER_LR_WEIGHTS if lr is None else lr
        if lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or eta <= 0:
            raise ValueError(f"LARS: invalid hyperparameters lr={lr} weight_decay={weight_decay} "
                             f"momentum={momentum} eta={eta}")
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, eta=eta, lars=True)
        params = list(params)
        if not given and params and isinstance(params[0], dict):
            # no lr given: a group without its own takes the rate it suggests (the paper's, from lars_param_groups)
            params = [dict(g, lr=g["default_lr"]) if "lr" not in g and "default_lr" in g else g for g in params]
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


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_ratio: float = 0.001) -> float:
    """The paper's learning-rate multiplier at the 0-based ``step``: linear warm-up from 0 over ``warmup_steps``
    (capped at ``total_steps``), then a half cosine from 1 down to ``final_ratio`` at ``total_steps``."""
    warmup_steps = min(max(warmup_steps, 0), total_steps)
    if step < warmup_steps:
        return step / warmup_steps
    decay_steps = total_steps - warmup_steps
    progress = min((step - warmup_steps) / max(decay_steps, 1), 1.0)
    q = 0.5 * (1 + math.cos(math.pi * progress))
    return q + final_ratio * (1 - q)


class CosineSchedule:
    """:func:`warmup_cosine` with its lengths fixed: ``schedule(step)`` is the multiplier of the base rates.

    A pure function of the step (the trainer's resumed runs continue bit for bit from the step alone).
    Paper: 10 warm-up epochs, final ratio 1/1000.
    """

    def __init__(self, total_steps: int, warmup_steps: int, final_ratio: float = 0.001):
        if total_steps < 1:
            raise ValueError(f"schedule: total_steps must be >= 1, got {total_steps}")
        self.total_steps = int(total_steps)
        self.warmup_steps = int(min(max(warmup_steps, 0), total_steps))
        self.final_ratio = float(final_ratio)

    def __call__(self, step: int) -> float:
        return warmup_cosine(step, self.total_steps, self.warmup_steps, self.final_ratio)


class WarmupCosine(LRScheduler):
    """The paper's schedule as a PyTorch LR scheduler: call ``sched.step()`` after every optimiser step.

    At step ``t`` every group's rate is ``base_lr * scale * warmup_cosine(t, total_steps, warmup_steps,
    final_ratio)`` (``base_lr``: the group's base rate, else its ``lr`` when the scheduler was created).

    The paper's rates (:class:`LARS`'s defaults, ``lr_weights``/``lr_biases`` of the config) are per 256
    samples: give ``batch_size`` and every rate is scaled by ``batch_size / 256``, as the trainer does.
    Without it (and without ``scale``) the rates are used as they are, which is right for rates meant for the
    batch at hand (``AdamW(..., lr=1e-3)``).

    Args:
        optimizer: any torch optimiser (:class:`LARS` with :func:`lars_param_groups` in the paper).
        total_steps: length of the run in optimiser steps.
        warmup_steps: linear warm-up from 0 (paper: 10 epochs).
        final_ratio: the multiplier at the end of the cosine (paper: 0.001).
        scale: multiplies every base rate (default 1); ``batch_size=B`` is the same as ``scale=B / 256``.
        batch_size: the global batch size, for base rates given per 256 samples: ``scale = batch_size / 256``.
            Give ``batch_size`` or ``scale``, not both.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                 final_ratio: float = 0.001, scale: float | None = None, last_epoch: int = -1, *,
                 batch_size: int | None = None):
        if batch_size is not None:
            if scale is not None:
                raise ValueError(f"WarmupCosine: give batch_size ({batch_size}) or scale ({scale}), not both: "
                                 "batch_size=B is scale=B / 256")
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"WarmupCosine: batch_size must be a whole number >= 1, got {batch_size!r}")
            scale = batch_size / 256
        schedule = CosineSchedule(total_steps, warmup_steps, final_ratio)  # checks and caps the lengths
        # Plain numbers only, so that ``state_dict()`` loads with ``torch.load(weights_only=True)``.
        self.total_steps, self.warmup_steps = schedule.total_steps, schedule.warmup_steps
        self.final_ratio, self.scale = schedule.final_ratio, float(1.0 if scale is None else scale)
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group.get("base_lr", group["lr"]))
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | torch.Tensor]:  # LRScheduler's type: a rate may be a tensor
        factor = warmup_cosine(self.last_epoch, self.total_steps, self.warmup_steps, self.final_ratio) * self.scale
        return [base * factor for base in self.base_lrs]


OPTIMIZERS = ("lars", "adamw")


def build_optimizer(name: str, model: nn.Module, lr_weights: float, lr_biases: float, weight_decay: float,
                    momentum: float = 0.9, eta: float = 0.001) -> torch.optim.Optimizer:
    """The pretraining optimiser with the paper's parameter split (weights vs biases and norms).

    ``lars`` is the paper's. ``adamw`` (betas (``momentum``, 0.999)) is an option for short runs and small data;
    its weight decay, like LARS's, applies to the weights only. Base learning rates are per 256 samples.
    """
    groups = lars_param_groups(model, lr_weights, lr_biases)
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
