"""The views of a batch of encoded files, made on the training device (the ``--data-path device`` path).

    >>> images, failed = decode_batch(encoded, device)           # list of (3, H_i, W_i) uint8 on the device
    >>> x = run_ops(OPS, images, params, cfg)                    # (B, 3, S, S) float in [0, 1]: one view

Loader workers only read bytes. JPEGs are decoded together with torchvision's batched ``decode_jpeg`` on the
device (nvJPEG on CUDA; libjpeg-turbo when the device is the CPU), other formats were already decoded in the
workers. The executor `OPS` crops each sample of its own size (`crop_resize_each`: resized with
``F.interpolate(antialias=True)``, torchvision's antialiased resize); every later op runs batched, with the
functions of the batched executor (`tensor.OPS`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_jpeg

from barlowtwins.transforms import tensor
from barlowtwins.transforms.params import ViewParams


def decode_batch(encoded: list[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode 1-D uint8 tensors of JPEG files to (3, H, W) uint8 RGB on ``device``, all in one call.

    Returns the images (None where decoding failed) and, for each failure, the decoder's message. One bad
    file makes the batched call fail, so the batch is then decoded one file at a time to find it.
    """
    if not encoded:
        return [], []
    try:
        out = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
        return list(out), []
    except (RuntimeError, ValueError) as e:
        if len(encoded) == 1:
            return [None], [str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__]
    images, errors = [], []
    for data in encoded:
        img, err = decode_batch([data], device)
        images += img
        errors += err
    return images, errors


def crop_resize_each(images: list[torch.Tensor], boxes: torch.Tensor, size: int,
                     mode: str = "bicubic") -> torch.Tensor:
    """Per-sample crop ``boxes`` ([top, left, h, w]) of (3, H_i, W_i) uint8 images of any sizes, resized to
    ``size`` with antialiasing -> (B, 3, size, size) float32 in [0, 1].

    One ``F.interpolate`` per image (the images differ in size, so they cannot share a kernel); only the crop
    is converted to float.
    """
    device = images[0].device
    out = torch.empty(len(images), 3, size, size, device=device)
    aa = mode != "nearest"
    for i, (img, box) in enumerate(zip(images, boxes.tolist())):
        t, l, h, w = (int(v) for v in box)
        crop = img[:, t: t + h, l: l + w].unsqueeze(0).float().div_(255)
        y = F.interpolate(crop, size=(size, size), mode=mode, antialias=aa, align_corners=False if aa else None)
        out[i] = y[0]
    return out.clamp_(0, 1) if mode == "bicubic" else out


def _crop(images: list[torch.Tensor], p: ViewParams, cfg) -> torch.Tensor:
    """The crop of the device path: a list of (3, H_i, W_i) uint8 images -> (B, 3, S, S) float in [0, 1]."""
    return crop_resize_each(images, p.box, cfg.image_size, cfg.interpolation)


# The device executor: its own crop (the images differ in size); every other op on the batch of views.
OPS = {**tensor.OPS, "crop": _crop}
