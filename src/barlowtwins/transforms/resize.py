"""Crop-and-resize of many images in a few batched ops: PyTorch's antialiased resize written as two matrices.

    >>> wh = resize_weights(top, height, H, 224, "bicubic")     # (n, 224, H): rows of the crops
    >>> x = crop_resize_grouped(images, boxes, 224)             # list of (3, H_i, W_i) uint8 -> (n, 3, 224, 224)

A separable resize is a matrix product per axis: ``out = Wh @ img @ Ww.T``, with ``Wh`` (out, H) holding, for each
output row, the filter weights over the source rows. Placing a crop's weights at its offset in a matrix over the
*whole* image makes crop and resize one product, so images of one shape are cropped and resized together by
two batched matmuls, whatever their boxes: the kernel launches per batch grow with the number of distinct image
shapes (few: cameras and data sets repeat theirs), not with the number of samples, as one ``F.interpolate`` per
crop does. The weights are those of ``F.interpolate(..., antialias=True, align_corners=False)`` (PIL's filters:
bicubic with a = -0.5, the triangle for bilinear; widened by the downscale factor), computed on the device from
the boxes, so no large host tensor is built or copied; nearest is ``F.interpolate``'s legacy nearest. The same
matrices have no kernel-size limit, so very large crops need no pooling.

Why our own rather than ``F.interpolate`` or ``torchvision.ops.roi_align``: interpolate takes one size per call,
and roi_align averages bilinear samples per bin, which is neither PIL's nor torchvision's resize.
"""

from __future__ import annotations

import numpy as np
import torch

# Filter support (taps at scale 1) of the antialiased kernels, as in PyTorch's upsample_aa.
SUPPORT = {"bicubic": 4, "bilinear": 2}
# Pixels of source images per batched product (their float copy: 4 bytes x 3 channels each, so 384 MB): a
# group of same-shape images above this is done in chunks (the device path crops a larger single image first).
CHUNK_PIXELS = 1 << 25


def _filter(x: torch.Tensor, mode: str) -> torch.Tensor:
    """PyTorch's (and PIL's) antialiasing filters: Keys' cubic with a = -0.5, or the triangle."""
    x = x.abs()
    if mode == "bilinear":
        return (1 - x).clamp_(min=0)
    a = -0.5
    near = ((a + 2) * x - (a + 3)) * x * x + 1  # |x| < 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a  # 1 <= |x| < 2
    return torch.where(x < 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_weights(starts: torch.Tensor, lengths: torch.Tensor, in_size: int, out_size: int,
                   mode: str = "bicubic") -> torch.Tensor:
    """Per-sample resize matrices along one axis -> (n, out_size, in_size) float32 on the boxes' device.

    Sample k's crop covers source indices ``[starts[k], starts[k] + lengths[k])`` of an axis of ``in_size``; row
    i of its matrix holds the weights ``F.interpolate(crop, out_size, mode, antialias=True)`` gives the source
    pixels for output pixel i (zero outside the crop), so ``W @ line`` is the resized crop of ``line``.
    """
    starts = starts.to(torch.float32).reshape(-1, 1, 1)  # (n, 1, 1)
    lengths = lengths.to(torch.float32).reshape(-1, 1, 1)
    device = starts.device
    i = torch.arange(out_size, device=device, dtype=torch.float32).reshape(1, -1, 1)  # (1, out, 1)
    j = torch.arange(in_size, device=device, dtype=torch.float32).reshape(1, 1, -1) - starts  # (n, 1, in): crop coords
    scale = lengths / out_size  # (n, 1, 1): source pixels per output pixel
    if mode == "nearest":  # F.interpolate's nearest: floor(i * scale), clamped to the last pixel
        src = torch.minimum(torch.floor(i * scale), lengths - 1)  # (n, out, 1)
        return (j == src).to(torch.float32)
    if mode not in SUPPORT:
        raise ValueError(f"unknown interpolation '{mode}' (bicubic, bilinear or nearest)")
    half = SUPPORT[mode] / 2
    down = scale >= 1
    support = torch.where(down, half * scale, torch.full_like(scale, half))
    invscale = torch.where(down, 1 / scale, torch.ones_like(scale))
    center = scale * (i + 0.5)  # (n, out, 1)
    lo = torch.trunc(center - support + 0.5).clamp_(min=0)  # the window PyTorch sums over, in crop coords
    hi = torch.minimum(torch.trunc(center + support + 0.5), lengths)
    w = _filter((j - center + 0.5) * invscale, mode) * ((j >= lo) & (j < hi))  # (n, out, in)
    total = w.sum(-1, keepdim=True)
    return w / torch.where(total == 0, torch.ones_like(total), total)


def _groups(images: list[torch.Tensor]) -> list[list[int]]:
    """Indices of same-shape images, in chunks of at most `CHUNK_PIXELS` source pixels."""
    by_shape: dict[tuple, list[int]] = {}
    for k, img in enumerate(images):
        by_shape.setdefault(tuple(img.shape), []).append(k)
    chunks = []
    for shape, idx in by_shape.items():
        per = max(1, CHUNK_PIXELS // max(1, shape[-1] * shape[-2]))
        chunks += [idx[s: s + per] for s in range(0, len(idx), per)]
    return chunks


def crop_resize_grouped(images: list[torch.Tensor], boxes: torch.Tensor, size: int,
                        mode: str = "bicubic") -> torch.Tensor:
    """Crop ``boxes`` (n, 4) [top, left, h, w] of (3, H_i, W_i) uint8 ``images`` and resize each crop to
    ``size`` x ``size`` -> (n, 3, size, size) float32 in [0, 1] (bicubic clamped), antialiased as
    ``F.interpolate(antialias=True)``; one pair of matmuls per group of same-shape images."""
    device = images[0].device
    groups = _groups(images)
    order = [k for idx in groups for k in idx]
    boxes = _to(boxes.to(torch.float32)[order], device)  # (n, 4) in group order: a few hundred bytes
    outs, start = [], 0
    for idx in groups:
        x = torch.stack([images[k] for k in idx]).float()  # (g, 3, H, W), 0..255
        h_in, w_in = x.shape[-2:]
        b = boxes[start: start + len(idx)]
        start += len(idx)
        wh = resize_weights(b[:, 0], b[:, 2], h_in, size, mode).mul_(1 / 255)  # (g, S, H), scaled to [0, 1]
        ww = resize_weights(b[:, 1], b[:, 3], w_in, size, mode)  # (g, S, W)
        if h_in >= w_in:  # the cheaper order: shrink the longer axis first
            y = (wh.unsqueeze(1) @ x) @ ww.transpose(1, 2).unsqueeze(1)  # (g, 3, S, W) -> (g, 3, S, S)
        else:
            y = wh.unsqueeze(1) @ (x @ ww.transpose(1, 2).unsqueeze(1))  # (g, 3, H, S) -> (g, 3, S, S)
        outs.append(y)
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if order != sorted(order):  # back to the samples' order: (n, 3, S, S)
        out = out.index_select(0, _to(torch.from_numpy(np.argsort(order)), device))
    return out.clamp_(0, 1) if mode == "bicubic" else out


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor to ``device`` without a host sync (pinned, non-blocking on CUDA)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


__all__ = ["CHUNK_PIXELS", "crop_resize_grouped", "resize_weights"]
