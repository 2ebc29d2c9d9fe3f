"""The device path's pieces, on CPU tensors: batched JPEG decode against PIL, per-sample antialiased crops
against torchvision (bicubic and bilinear), the device and dtype of every output, and the rule choosing the
batched or the per-image crop (with the launch counts it weighs). The device executor's ops against torchvision
for drawn parameters: `test_spec.py`."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from barlowtwins.data.jpeg import is_jpeg
from barlowtwins.transforms import device as dev
from barlowtwins.transforms.device import crop_method, crop_resize_each, decode_batch


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


class Kernels(TorchDispatchMode):
    """Counts the dispatched ops that are not views: the kernels a GPU would launch."""

    def __init__(self):
        super().__init__()
        self.kernels = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.kernels += not func.is_view
        return func(*args, **(kwargs or {}))


def test_the_per_image_launches_the_rule_weighs_are_those_dispatched():
    g = torch.Generator().manual_seed(1)
    for n in (1, 3, 9):
        images = [torch.randint(0, 256, (3, 30 + k, 40), dtype=torch.uint8, generator=g) for k in range(n)]
        boxes = torch.tensor([[1, 2, 20 + k, 30] for k in range(n)], dtype=torch.float64)
        with Kernels() as count:
            crop_resize_each(images, boxes, 16)
        assert count.kernels == dev.EACH_CALL_LAUNCHES + dev.EACH_IMAGE_LAUNCHES * n
    big = [torch.zeros(3, 300, 280, dtype=torch.uint8)] * 2  # crops over POOL_ABOVE x 8 on a side: pooled first
    with Kernels() as count:
        crop_resize_each(big, torch.tensor([[0.0, 0.0, 300.0, 280.0]] * 2), 8)
    assert count.kernels == dev.EACH_CALL_LAUNCHES + (dev.EACH_IMAGE_LAUNCHES + dev.EACH_POOL_LAUNCHES) * 2


def imagenet_like(n, seed=0):
    """(height, width) of n photos about ImageNet's: 500 px on the long side, a quarter portrait, all different."""
    rng = np.random.default_rng(seed)
    short = rng.permutation(np.arange(300, 300 + 4 * n, 4))[:n]
    return [(500, int(s)) if k % 4 == 0 else (int(s), 500) for k, s in enumerate(short)]


def test_the_rule_per_image_on_the_cpu_batched_on_accelerators_for_real_batches():
    shapes = imagenet_like(64)
    assert crop_method("cpu", shapes, 224) == "each"  # launches are cheap, arithmetic counts
    assert crop_method("cpu", [(20, 20)] * 256, 8) == "each"
    assert crop_method("cuda", shapes, 224) == "batched"  # 64 distinct sizes: one chunk
    assert crop_method("mps", shapes, 224) == "batched"
    assert crop_method("meta", shapes, 224) == "batched"  # the GPU check's rehearsal runs what a GPU runs


def test_the_rule_takes_the_fewer_launches_on_accelerators(monkeypatch):
    # one chunk: batched 3 + 69 + n launches against 2 + 4 n per image: the batched crop from 24 images on
    assert crop_method("cuda", imagenet_like(24), 224) == "batched"
    assert crop_method("cuda", imagenet_like(23), 224) == "each"
    assert crop_method("cuda", imagenet_like(4), 224) == "each"
    # crops that may be pooled cost the per-image path one launch more each
    assert crop_method("cuda", [(600, 520 + k) for k in range(23)], 32) == "batched"  # sides over 16 x 32
    # images over the chunk budget take the per-image crop anyway: they count for neither (30 images, 20 small)
    monkeypatch.setattr(dev, "CHUNK_PIXELS", 376 * 500)
    assert sum(h * w <= dev.CHUNK_PIXELS for h, w in imagenet_like(30)) == 20
    assert crop_method("cuda", imagenet_like(30), 224) == "each"
    assert crop_method("cuda", [(10_000, 10_000)] * 64, 224) == "each"


def test_the_rule_weighs_the_chunks(monkeypatch):
    from barlowtwins.transforms import resize

    shapes = imagenet_like(64)
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 2 * 500 * 500)  # about two images per chunk: 69 launches each
    assert len(resize.padded_layout(shapes)[3]) >= 20
    assert crop_method("cuda", shapes, 224) == "each"
