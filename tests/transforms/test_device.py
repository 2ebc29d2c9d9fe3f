"""The device path's pieces, on CPU tensors: batched JPEG decode against PIL, per-sample antialiased crops
against torchvision (bicubic and bilinear), and the device and dtype of every output. The device executor's ops against torchvision for drawn parameters: `test_spec.py`."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from barlowtwins.data.images import is_jpeg
from barlowtwins.transforms.device import crop_resize_each, decode_batch


def jpeg_bytes(seed, size=(50, 40), quality=90, mode="RGB"):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.BICUBIC).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


def test_batched_decode_equals_pil_within_jpeg_tolerance():
    files = [jpeg_bytes(0), jpeg_bytes(1, (33, 61)), jpeg_bytes(2, (40, 40), mode="L")]
    assert all(is_jpeg(f) for f in files) and not is_jpeg(b"\x89PNG")
    images, errors = decode_batch([as_tensor(f) for f in files], torch.device("cpu"))
    assert errors == []
    for img, data in zip(images, files):
        ref = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)
        assert img.dtype == torch.uint8 and img.device.type == "cpu" and img.shape == ref.shape
        diff = (img.int() - ref.int()).abs()
        assert diff.float().mean() < 1.0 and diff.max() <= 8  # decoders may differ in chroma upsampling


def test_a_corrupt_file_fails_alone():
    good, bad = jpeg_bytes(0), jpeg_bytes(1)
    bad = bad[: len(bad) // 3]
    images, errors = decode_batch([as_tensor(good), as_tensor(bad), as_tensor(good)], torch.device("cpu"))
    assert images[1] is None and len(errors) == 1
    assert ".cpp:" not in errors[0] and "truncated" in errors[0]  # the decoder's words, not its source location
    assert images[0] is not None and torch.equal(images[0], images[2])


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
def test_per_sample_crops_match_torchvision(mode):
    g = torch.Generator().manual_seed(0)
    sizes = ((40, 50), (64, 30), (20, 20))
    images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g) for h, w in sizes]
    boxes = torch.tensor([[3, 5, 36, 40], [0, 2, 60, 28], [4, 4, 8, 10]], dtype=torch.float64)  # down, down, up
    out = crop_resize_each(images, boxes, 16, mode)
    assert out.shape == (3, 3, 16, 16) and out.dtype == torch.float32 and out.device.type == "cpu"
    interp = InterpolationMode.BICUBIC if mode == "bicubic" else InterpolationMode.BILINEAR
    for i, (img, (t, l, h, w)) in enumerate(zip(images, boxes.int().tolist())):
        ref = TF.resized_crop(img.float() / 255, t, l, h, w, [16, 16], interpolation=interp, antialias=True)
        torch.testing.assert_close(out[i], ref.clamp(0, 1) if mode == "bicubic" else ref, atol=1e-5, rtol=0)
