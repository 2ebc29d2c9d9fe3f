"""Crop-and-resize of a batch of images of any sizes in a fixed number of batched ops: PyTorch's antialiased
resize written as two matrices.

    >>> wh = resize_weights(top, height, H, 224, "bicubic")     # (n, 224, H): rows of the crops
    >>> x = crop_resize_padded(images, boxes, 224)              # list of (3, H_i, W_i) uint8 -> (n, 3, 224, 224)

A separable resize is a matrix product per axis: ``out = Wh @ img @ Ww.T``, with ``Wh`` (out, H) holding, for each
output row, the filter weights over the source rows. Placing a crop's weights at its offset in a matrix over the
*whole* image makes crop and resize one product; a matrix over a zero-padded image (``H`` the largest height of
the batch) is the same product, its columns beyond the image being zero (the crop lies inside the image). So the
images are placed in one zero-padded (n, 3, Hmax, Wmax) float buffer (one copy each) and every crop of the batch
is two batched matmuls, whatever the boxes and however many distinct shapes the images have: the ops per batch
are a fixed number plus one copy (and a few views) per image, where one ``F.interpolate`` per crop costs about
ten launches per image and one pair of matmuls per group of same-shape images about a hundred per group.

Padding is kept small: portrait images are placed transposed (their boxes swapped, their outputs transposed back:
the separable resize of a transposed image is the transposed resize), so every placed image is landscape, and
the images are sorted by size and cut into chunks of at most `CHUNK_PIXELS` padded pixels, so one large image
pads only the few images of its own size. The weights are those of ``F.interpolate(..., antialias=True,
align_corners=False)`` (PIL's filters: bicubic with a = -0.5, the triangle for bilinear; widened by the downscale
factor), computed on the device from the boxes, so no large host tensor is built or copied; nearest is
``F.interpolate``'s legacy nearest. The same matrices have no kernel-size limit, so very large crops need no
pooling.

Why our own rather than ``F.interpolate`` or ``torchvision.ops.roi_align``: interpolate takes one size per call,
and roi_align averages bilinear samples per bin, which is neither PIL's nor torchvision's resize.
"""

from __future__ import annotations

import numpy as np
import torch

# Filter support (taps at scale 1) of the antialiased kernels, as in PyTorch's upsample_aa.
SUPPORT = {"bicubic": 4, "bilinear": 2}
# Padded pixels per batched product (their float buffer: 4 bytes x 3 channels each, so 384 MB): a batch above
# this is done in chunks of similar-size images (the device path crops a larger single image on its own first).
CHUNK_PIXELS = 1 << 25
# The kernels `crop_resize_padded` launches (its dispatched ops that are not views), counted on CPU tensors with
# a dispatch mode (tests/transforms/test_resize.py keeps them true): per call (the output, the small host
# tensor's copy, the clamp), per chunk (buffer, weights, matmuls, orientation, scatter) and per image (its copy
# into the buffer; its other ops are views; a chunk of one shape is stacked instead, fewer). The device path's
# choice of crop weighs them (`crop_method`).
PADDED_CALL_LAUNCHES = 3
PADDED_CHUNK_LAUNCHES = 69
PADDED_IMAGE_LAUNCHES = 1


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


def padded_layout(shapes) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[int, int]]]:
    """How `crop_resize_padded` places images of ``shapes`` ((n, 2) heights and widths, host ints).

    Returns ``tall`` (n,) bool (portrait: placed transposed), ``placed`` (n, 2) the (height, width) each is
    placed as (height <= width), ``order`` (n,) the images sorted by placed width, then height, largest first,
    and ``chunks``: (start, stop) slices of ``order`` of at most `CHUNK_PIXELS` padded pixels (count x largest
    placed height x largest width); an image above that on its own is a chunk alone. Sorted, the images of a
    chunk have similar sizes, so little of a chunk is padding."""
    hw = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
    tall = hw[:, 0] > hw[:, 1]
    placed = np.where(tall[:, None], hw[:, ::-1], hw)  # (n, 2): height <= width
    order = np.lexsort((-placed[:, 0], -placed[:, 1]))  # widest first, then tallest
    chunks, start, h_max = [], 0, 0
    for k in range(len(order)):
        h, w = placed[order[k]]
        w_max = placed[order[start], 1]  # the chunk's first image is its widest
        if k > start and (k - start + 1) * max(h_max, h) * w_max > CHUNK_PIXELS:
            chunks.append((start, k))
            start, h_max = k, h
        else:
            h_max = max(h_max, h)
    if len(order):
        chunks.append((start, len(order)))
    return tall, placed, order, chunks


def crop_resize_padded(images: list[torch.Tensor], boxes, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Crop ``boxes`` (n, 4) [top, left, h, w] (a host tensor or array) of (3, H_i, W_i) uint8 ``images`` (one
    device, any sizes) and resize each crop to ``size`` x ``size`` -> (n, 3, size, size) float32 in [0, 1]
    (bicubic clamped), antialiased as ``F.interpolate(antialias=True)``.

    Per chunk of `padded_layout`: the images placed in a zero-padded float buffer (one copy each; a chunk of
    one shape is stacked, one copy for all), the weights of every box built at once, two batched matmuls. No host
    sync: the shapes are host metadata, and the boxes, the orientation flags and the sample order travel to the
    device in one small host tensor (pinned, non-blocking)."""
    device = images[0].device
    n = len(images)
    tall, placed, order, chunks = padded_layout([img.shape[-2:] for img in images])
    box = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
    box = np.where(tall[:, None], box[:, [1, 0, 3, 2]], box)  # a transposed image's box: [left, top, w, h]
    # (n, 6) in placed order: the box, whether the output is transposed back, and the sample's position
    host = np.concatenate([box, tall[:, None], np.arange(n)[:, None]], axis=1)[order]
    small = _to(torch.from_numpy(host).to(torch.float32), device)  # positions < 2^24: exact in float32
    out = torch.empty(n, 3, size, size, device=device)
    for a, b in chunks:
        idx = order[a:b]
        h_in, w_in = (int(v) for v in placed[idx].max(0))
        # each image upright or transposed: a view either way (one op whatever the orientation)
        src = [images[k].permute(0, 2, 1) if tall[k] else images[k].permute(0, 1, 2) for k in idx]
        if (placed[idx] == (h_in, w_in)).all():  # one shape (a folder of equal images): stacked, no padding
            x = torch.stack(src).to(torch.float32)  # (g, 3, H, W), 0..255
        else:
            x = torch.zeros(b - a, 3, h_in, w_in, device=device)  # (g, 3, H, W): 0..255, zero beyond each image
            for j, k in enumerate(idx):
                h, w = placed[k]  # one copy (uint8 -> float) into place; narrow: a slice even when it spans the axis
                x[j].narrow(1, 0, h).narrow(2, 0, w).copy_(src[j])
        s = small[a:b]
        # both axes' matrices in one build over the longer padded side: (g, 2, S, L), rows [top, h], [left, w]
        w2 = resize_weights(s[:, 0:2], s[:, 2:4], max(h_in, w_in), size, mode).view(b - a, 2, size, -1)
        wh = w2[:, 0, :, :h_in].mul_(1 / 255)  # (g, S, H), scaled to [0, 1]; columns beyond H are zero anyway
        ww = w2[:, 1, :, :w_in]  # (g, S, W)
        if h_in >= w_in:  # the cheaper order: shrink the longer axis first
            y = (wh.unsqueeze(1) @ x) @ ww.transpose(1, 2).unsqueeze(1)  # (g, 3, S, W) -> (g, 3, S, S)
        else:
            y = wh.unsqueeze(1) @ (x @ ww.transpose(1, 2).unsqueeze(1))  # (g, 3, H, S) -> (g, 3, S, S)
        y = torch.where(s[:, 4].bool().reshape(-1, 1, 1, 1), y.transpose(-1, -2), y)  # portrait: back upright
        out.index_copy_(0, s[:, 5].long(), y)
    return out.clamp_(0, 1) if mode == "bicubic" else out


# The batched crop's earlier name (one pair of matmuls per group of same-shape images): the same call.
crop_resize_grouped = crop_resize_padded


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A small host tensor to ``device`` without a host sync (pinned, non-blocking on CUDA)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


__all__ = ["CHUNK_PIXELS", "PADDED_CALL_LAUNCHES", "PADDED_CHUNK_LAUNCHES", "PADDED_IMAGE_LAUNCHES",
           "crop_resize_grouped", "crop_resize_padded", "padded_layout", "resize_weights"]
