"""The views of a batch of encoded files, made on the training device (the ``--data-path device`` path).

    >>> check_device_decoder(device)                              # once per process: decoder vs PIL
    >>> images, failed = decode_batch(encoded, device)           # list of (3, H_i, W_i) uint8 on the device
    >>> x = run_ops(OPS, images, params, cfg)                    # (B, 3, S, S) float in [0, 1]: one view

Loader workers only read bytes. JPEGs are decoded together with torchvision's batched ``decode_jpeg`` on the
device (nvJPEG on CUDA; libjpeg-turbo when the device is the CPU), other formats (and JPEGs nvJPEG cannot
decode) were already decoded in the workers. Every device decode goes through `decode_jpegs`, the one place
that orders the decoder's writes after the work already queued on the device. The executor `OPS` crops the
images of their own sizes (`crop_resize`: torchvision's antialiased resize, on an accelerator as batched
matmuls over the zero-padded batch, `transforms.resize`, whatever the images' sizes; `crop_method` says when);
every later op runs batched, with the functions of the batched executor (`tensor.OPS`).
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

try:  # torchvision deprecates its image decoders (0.29): once they are gone the device path is unavailable, not
    # the package (check_device_decoder reports it and the cpu path is used)
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - depends on the installed torchvision
    ImageReadMode = decode_jpeg = None

from barlowtwins.errors import ConfigError
from barlowtwins.transforms import tensor
from barlowtwins.transforms.params import ViewParams
from barlowtwins.transforms.resize import (
    CHUNK_PIXELS,
    PADDED_CALL_LAUNCHES,
    PADDED_CHUNK_LAUNCHES,
    PADDED_IMAGE_LAUNCHES,
    crop_resize_padded,
    padded_layout,
)

# torchvision 0.29 deprecates its image decoders and warns at every call; one warning per batch would flood
# the training log, so it is silenced at the call site (only that message).
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"

# Crops larger than this many times the output on a side are average-pooled by an integer factor first:
# the antialiased interpolate's kernel grows with the downscale and has a size limit on CUDA (about 47x).
POOL_ABOVE = 16

_side_streams: dict = {}
_checked: dict = {}  # device -> None (decoder good) or the reason it is not usable


def _decode(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """torchvision's batched decode of 1-D uint8 CPU tensors -> list of (3, H, W) uint8 on ``device``."""
    if decode_jpeg is None:
        raise NotImplementedError("this torchvision has no JPEG decoder (torchvision.io.decode_jpeg)")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATION)
        out = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    return list(out)


def _record(t: torch.Tensor, stream) -> None:
    t.record_stream(stream)


def decode_jpegs(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Decode JPEG bytes (1-D uint8 CPU tensors) to (3, H_i, W_i) uint8 RGB on ``device`` in one batched call:
    the only function that calls the device decoder.

    On CUDA the outputs come from the caching allocator, which hands out memory freed on a stream as soon as
    the freeing kernels are *queued*, trusting stream order. nvJPEG's hardware decoder writes its outputs
    without waiting for the work queued before it on that stream, so decoding on the training stream could
    overwrite tensors that queued kernels still read (silent corruption). So the decode runs on a side stream
    whose memory pool is its own: its previous work is drained first (host wait, normally already done),
    it waits for the current stream, and every output is ``record_stream``-ed on the current stream, so its
    block is reused only once the training stream's kernels that read it have run. The current stream then
    waits for the decode before the crops read the images. The drain bounds the host to about one step
    ahead of the device (the side stream's last wait covers the step before), which the loader's prefetching
    hides; correctness first.
    """
    if not encoded:
        return []
    if device.type != "cuda":
        return _decode(encoded, device)
    current = torch.cuda.current_stream(device)
    side = _side_streams.get(device)
    if side is None:
        side = _side_streams[device] = torch.cuda.Stream(device)
    side.synchronize()  # the previous decode's temporaries are free for real before the decoder reuses them
    side.wait_stream(current)
    with torch.cuda.stream(side):
        out = _decode(encoded, device)
    current.wait_stream(side)
    for t in out:
        _record(t, current)
    return out


def _is_about_the_file(e: Exception) -> bool:
    """True for a decoder refusing the data (corrupt, or a JPEG variant it lacks); False for errors of the
    device or the library (out of memory, CUDA errors, no nvJPEG, no list support), which stop the run."""
    if isinstance(e, (torch.cuda.OutOfMemoryError, NotImplementedError, TypeError, MemoryError)):
        return False
    msg = str(e).lower()
    if any(s in msg for s in ("out of memory", "cuda error", "cudaerror", "not compiled", "not supported on",
                              "no cuda", "nvjpeg not", "device-side", "not available")):
        return False
    return isinstance(e, (RuntimeError, ValueError))


def _reason(e: Exception) -> str:
    """The decoder's message in one line, without torchvision's source location ("decode_jpeg, <path>.cpp:171, ")."""
    text = str(e).strip()
    line = re.sub(r"^[\w ]*, \S+\.cpp:\d+, ", "", text.splitlines()[-1]) if text else type(e).__name__
    return line[:200]


def decode_batch(encoded: list[torch.Tensor], device: torch.device) -> tuple[list[torch.Tensor | None], list[str]]:
    """Decode 1-D uint8 tensors of JPEG files to (3, H, W) uint8 RGB on ``device``, all in one call.

    Returns the images (None where the decoder refused the file) and, for each refusal, the decoder's message
    (the caller decodes those files on the CPU). One refused file makes the batched call fail, so the batch is
    then decoded one file at a time to find it. Errors that are not about a file (out of device memory, a
    CUDA error, a torchvision without the device decoder) are a `ConfigError` naming the cause: they are not
    counted as corrupt files.
    """
    if not encoded:
        return [], []
    try:
        decoded: list[torch.Tensor | None] = list(decode_jpegs(encoded, device))  # the caller fills in refusals
        return decoded, []
    except Exception as e:  # sorted below: the file's fault or the run's
        if not _is_about_the_file(e):
            raise ConfigError(f"JPEG decoding on {device} failed ({type(e).__name__}: {_reason(e)}); lower "
                              "--batch-size if the device is out of memory, or use --data-path cpu") from e
        if len(encoded) == 1:
            return [None], [_reason(e)]
    images, errors = [], []
    for data in encoded:
        img, err = decode_batch([data], device)
        images += img
        errors += err
    return images, errors


def _probe_jpeg() -> bytes:
    """A small JPEG (48 x 40, smooth colour gradients) for the decoder's self-test, made in memory."""
    y, x = np.mgrid[0:40, 0:48]
    rgb = np.stack([x * 5, y * 6, (x + y) * 3], axis=-1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def check_device_decoder(device: torch.device, tolerance: float = 3.0) -> str | None:
    """Decode a known small JPEG on ``device`` and compare it with PIL, once per process and device.

    Returns None when the decoder is usable, else one line saying why not (a torchvision without the device
    decoder or list support: the caller falls back to the cpu path). A decoder that runs but returns pixels
    differing from PIL's by more than ``tolerance`` levels on average is a `ConfigError`: the device path
    would train on wrong images.
    """
    key = str(device)
    if key in _checked:
        return _checked[key]
    data = _probe_jpeg()
    ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)
    enc = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    try:
        out = decode_jpegs([enc, enc], device)
    except Exception as e:  # noqa: BLE001 -- any failure here means: no usable device decoder
        _checked[key] = f"torchvision cannot decode JPEGs on {device} ({type(e).__name__}: {_reason(e)})"
        return _checked[key]
    for img in out:
        if tuple(img.shape) != tuple(ref.shape):
            diff = float("inf")
        else:
            diff = float((img.cpu().int() - ref.int()).abs().float().mean())
        if not diff <= tolerance:
            raise ConfigError(f"the JPEG decoder on {device} returns wrong pixels (mean difference {diff:.1f} "
                              "levels from PIL on a test image); use --data-path cpu")
    _checked[key] = None
    return None


def pool_factors(h: int, w: int, size: int) -> tuple[int, int]:
    """Integer average-pool factors for a (h, w) crop resized to ``size``: 1 up to `POOL_ABOVE` x the output
    on that side, else the factor leaving 4-8x for the antialiased resize (within its kernel-size limit)."""
    kh = h // (size * 4) if h > POOL_ABOVE * size else 1
    kw = w // (size * 4) if w > POOL_ABOVE * size else 1
    return max(kh, 1), max(kw, 1)


def crop_resize_each(images: list[torch.Tensor], boxes: torch.Tensor, size: int,
                     mode: str = "bicubic") -> torch.Tensor:
    """Per-sample crop ``boxes`` ([top, left, h, w]) of (3, H_i, W_i) uint8 images of any sizes, resized to
    ``size`` with antialiasing -> (B, 3, size, size) float32 in [0, 1].

    One ``F.interpolate`` per image (the images differ in size, so they cannot share a kernel); only the crop
    is converted to float. A crop above `POOL_ABOVE` x the output on a side is first average-pooled by an
    integer factor (an area filter, as the antialiased resize is at large factors), so the resize's kernel
    stays small.
    """
    device = images[0].device
    out = torch.empty(len(images), 3, size, size, device=device)
    aa = mode != "nearest"
    for i, (img, box) in enumerate(zip(images, boxes.tolist())):
        t, l, h, w = (int(v) for v in box)
        crop = img[:, t: t + h, l: l + w].unsqueeze(0).float().div_(255)  # (1, 3, h, w)
        k = pool_factors(h, w, size) if aa else (1, 1)
        if k != (1, 1):
            # (1, 3, h // kh, w // kw): the last h % kh rows (w % kw columns) are left out, a shift below
            # kh / 2 source pixels (< 1/8 output pixel), rather than a partial window stretched to a full one.
            crop = F.avg_pool2d(crop, k, stride=k)
        y = F.interpolate(crop, size=(size, size), mode=mode, antialias=aa, align_corners=False if aa else None)
        out[i] = y[0]
    return out.clamp_(0, 1) if mode == "bicubic" else out


# The kernels `crop_resize_each` launches (its dispatched ops that are not views, counted on CPU tensors; the
# tests keep them true): per image the crop's float copy, its scaling, the resize and the copy into the batch,
# and one more for an average-pooled crop; per call the output and the clamp.
EACH_IMAGE_LAUNCHES = 4
EACH_POOL_LAUNCHES = 1
EACH_CALL_LAUNCHES = 2


def crop_method(device_type: str, shapes: Sequence[tuple[int, int]], size: int) -> str:
    """Which crop the device path uses for images of ``shapes`` ((height, width) each) resized to ``size`` on a
    device of ``device_type``: ``"batched"`` (`crop_resize_padded`) or ``"each"`` (`crop_resize_each`).

    Why: on the CPU a kernel launch costs next to nothing, and the arithmetic decides: the per-image resize
    touches each crop's pixels a few times (about 4 filter taps per source pixel and axis), the batched matmuls
    every padded pixel ``size`` times, so ``"each"``. On an accelerator the host's launches decide (a step of
    ResNet-50 is 80-100 ms; 30k launches of a few microseconds each cost more): the method with fewer kernel
    launches, counted (`EACH_IMAGE_LAUNCHES` and the like, kept true by the tests): per image 4 (5 when its crop
    may be pooled: a side above `POOL_ABOVE` x ``size``) against about 70 per chunk of `CHUNK_PIXELS` padded
    pixels plus 1 per image, so the batched crop from about 24 images of a chunk on. Images above `CHUNK_PIXELS`
    take the per-image crop either way (`crop_resize`), and count for neither."""
    if device_type == "cpu":
        return "each"
    small = [(int(h), int(w)) for h, w in shapes if h * w <= CHUNK_PIXELS]
    if not small:
        return "each"
    pooled = sum(max(h, w) > POOL_ABOVE * size for h, w in small)
    each = EACH_CALL_LAUNCHES + EACH_IMAGE_LAUNCHES * len(small) + EACH_POOL_LAUNCHES * pooled
    chunks = len(padded_layout(small)[3])
    batched = PADDED_CALL_LAUNCHES + PADDED_CHUNK_LAUNCHES * chunks + PADDED_IMAGE_LAUNCHES * len(small)
    return "batched" if batched < each else "each"


def crop_resize(images: list[torch.Tensor], boxes: torch.Tensor, size: int, mode: str = "bicubic",
                grouped: bool | None = None) -> torch.Tensor:
    """The device path's crop and resize: `crop_resize_padded` (two batched matmuls per chunk of the batch,
    whatever the images' sizes) or `crop_resize_each` (one ``F.interpolate`` per image), as `crop_method` picks
    for the device and the shapes; ``grouped`` forces the batched (True) or the per-image (False) one. With the
    batched crop, images above `CHUNK_PIXELS` (their float copy would cost over 384 MB) are cropped each on its
    own."""
    shapes = [(img.shape[-2], img.shape[-1]) for img in images]
    if grouped is None:
        grouped = crop_method(images[0].device.type, shapes, size) == "batched"
    if not grouped:
        return crop_resize_each(images, boxes, size, mode)
    big = [k for k, (h, w) in enumerate(shapes) if h * w > CHUNK_PIXELS]
    if not big:
        return crop_resize_padded(images, boxes, size, mode)
    rest = [k for k in range(len(images)) if k not in set(big)]
    parts = [crop_resize_each([images[k] for k in big], boxes[big], size, mode)]
    if rest:
        parts.append(crop_resize_padded([images[k] for k in rest], boxes[rest], size, mode))
    order = torch.from_numpy(np.argsort(np.array(big + rest)))  # back to the samples' order
    if images[0].device.type == "cuda":
        order = order.pin_memory().to(images[0].device, non_blocking=True)
    return torch.cat(parts).index_select(0, order.to(images[0].device))


def _crop(images: list[torch.Tensor], p: ViewParams, cfg) -> torch.Tensor:
    """The crop of the device path: a list of (3, H_i, W_i) uint8 images -> (B, 3, S, S) float in [0, 1]."""
    return crop_resize(images, p.box, cfg.image_size, cfg.interpolation)


# The device executor: its own crop (the images differ in size); every other op on the batch of views.
OPS: dict[str, Callable[..., torch.Tensor]] = {**tensor.OPS, "crop": _crop}
