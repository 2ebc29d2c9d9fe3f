"""Whether a network runs in the channels-last memory format on a device.

Channels-last is what GPU convolutions are fastest in, and what the trainer asks for by default. On the CPU,
PyTorch's oneDNN convolution backward corrupts the heap ("double free or corruption", then an abort that takes
the process and its run with it) for layers of fewer than 16 channels in channels-last: seen with torch 2.14 on
a width-8 ResNet-18 at odd batch sizes and at 224 px. Such narrow networks are only ever CPU demos, where the
format gains little; they run in the default (NCHW) format instead. Their inputs must then be NCHW too: a
convolution runs channels-last when its input is, and the CPU data path hands over views permuted from
height-width-channel decodes (channels-last strides), which took a width-8 run down with a segfault in backward.
`as_input_format` puts a batch in the network's format either way.
"""

from __future__ import annotations

import torch
from torch import nn

# the narrowest convolution (output channels) that is safe in channels-last on the CPU
MIN_CPU_CHANNELS_LAST = 16


def narrowest_conv(model: nn.Module) -> int | None:
    """The fewest output channels of any 2-D convolution in ``model`` (None when it has none)."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return min(widths) if widths else None


def use_channels_last(model: nn.Module, device: torch.device | str, wanted: bool = True) -> bool:
    """``wanted`` unless the device cannot take it: never on Apple MPS; on the CPU only when every convolution
    has at least `MIN_CPU_CHANNELS_LAST` output channels (see the module docstring)."""
    device = torch.device(device)
    if not wanted or device.type == "mps":
        return False
    if device.type == "cpu":
        narrowest = narrowest_conv(model)
        return narrowest is None or narrowest >= MIN_CPU_CHANNELS_LAST
    return True


def is_channels_last(model: nn.Module) -> bool:
    """Whether ``model``'s convolutions hold their weights channels-last (its inputs should match: a convolution
    runs channels-last when either its input or its weight is)."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return conv is not None and conv.weight.dim() == 4 and \
        conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()


def as_input_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """``x`` (B, C, H, W) laid out as the network runs: channels-last when ``channels_last``, else the default
    contiguous (NCHW) format, whatever strides ``x`` arrived with (a copy only when they differ)."""
    if x.dim() != 4:
        return x.contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)
