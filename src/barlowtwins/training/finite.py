"""The trainer's finiteness guard: what a checkpoint saves (checked with `runtime.finite.nonfinite_names`), and a
divergence reported with a fitting hint."""

from __future__ import annotations

import torch


def training_state_tensors(model: torch.nn.Module, optimizer: torch.optim.Optimizer):
    """(name, tensor) of every parameter, buffer and optimiser state tensor: what a checkpoint saves."""
    yield from model.named_parameters()
    yield from model.named_buffers()
    names = {id(p): n for n, p in model.named_parameters()}
    for p, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                yield f"optimizer[{names.get(id(p), '?')}].{key}", value


def divergence_hint(*, first_steps: bool, weights_only: bool, amp: bool, lr_weights: float, lr_biases: float,
                    eta: float, optimizer: str) -> str:
    """A hint that fits how the run diverged."""
    if first_steps:
        return ("it diverged in its first steps: check the data (no blank images) and --mean/--std, "
                f"then lower --lr-weights (now {lr_weights})")
    lower = f"lower --lr-weights (now {lr_weights}) and --lr-biases (now {lr_biases})"
    if optimizer == "lars":
        lower += f" or --eta (now {eta})"
    if weights_only:
        return f"the loss was finite but an update overflowed the weights: {lower}"
    if amp:
        return f"{lower}, or train with --precision fp32"
    return lower


def divergence_message(*, step: int, what: str, loss: dict | None, lrs: list[float], last_good: str,
                       hint: str) -> str:
    """One line: what became non-finite at which step, the learning rates and loss parts, what is kept, a hint."""
    parts = ""
    if loss:
        parts = (f"; loss {loss['loss']:.4g} (on-diagonal {loss['on_diag']:.4g}, "
                 f"off-diagonal {loss['off_diag']:.4g})")
    rates = ", ".join(f"{lr:.4g}" for lr in lrs)
    return (f"training diverged by step {step}: {what} became non-finite{parts}; learning rates {rates}; "
            f"nothing was saved, {last_good}; {hint}")
