"""The grouped crop-and-resize (`transforms.resize`) against PyTorch's own antialiased resize in float64, and
its launch count: the ops it dispatches do not grow with the number of same-shape samples."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from barlowtwins.transforms import resize
from barlowtwins.transforms.device import crop_resize, crop_resize_each
from barlowtwins.transforms.resize import crop_resize_grouped, resize_weights


def reference(images, boxes, size, mode):
    """One float64 ``F.interpolate`` per crop: the definition the matrices must equal."""
    out = []
    for img, (t, l, h, w) in zip(images, boxes.long().tolist()):
        crop = img[:, t:t + h, l:l + w].double().unsqueeze(0) / 255
        kw = {"antialias": True, "align_corners": False} if mode != "nearest" else {}
        y = F.interpolate(crop, size=(size, size), mode=mode, **kw)[0]
        out.append(y.clamp(0, 1) if mode == "bicubic" else y)
    return torch.stack(out)


def random_boxes(shapes, rng, scale=(0.02, 1.0)):
    boxes = []
    for _, h, w in shapes:
        bh = max(1, int(h * np.sqrt(rng.uniform(*scale))))
        bw = max(1, int(w * np.sqrt(rng.uniform(*scale))))
        boxes.append([rng.integers(0, h - bh + 1), rng.integers(0, w - bw + 1), bh, bw])
    return torch.tensor(boxes, dtype=torch.float64)


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [7, 24])
def test_equals_float64_interpolate_for_any_crop(mode, size):
    rng = np.random.default_rng(0)
    shapes = [(3, 40, 56)] * 5 + [(3, 17, 9)] * 3 + [(3, 300, 30), (3, 40, 56)]
    images = [torch.randint(0, 256, s, dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
              for k, s in enumerate(shapes)]
    boxes = random_boxes(shapes, rng)
    boxes[0] = torch.tensor([0, 0, 40, 56])  # the whole image
    boxes[1] = torch.tensor([39, 55, 1, 1])  # one pixel in the corner: upsampled
    boxes[8] = torch.tensor([0, 0, 300, 30])  # a 300/size downscale (no pooling needed)
    out = crop_resize_grouped(images, boxes, size, mode)
    assert out.shape == (len(images), 3, size, size) and out.dtype == torch.float32
    ref = reference(images, boxes, size, mode)
    assert (out.double() - ref).abs().max() < 2e-5


def test_weights_rows_sum_to_one_and_stay_inside_the_crop():
    starts, lengths = torch.tensor([0.0, 5.0, 90.0]), torch.tensor([100.0, 12.0, 10.0])
    for mode in ("bicubic", "bilinear", "nearest"):
        w = resize_weights(starts, lengths, 100, 16, mode)
        assert w.shape == (3, 16, 100)
        assert torch.allclose(w.sum(-1), torch.ones(3, 16), atol=1e-6)
        assert w[1, :, :5].abs().sum() == 0 and w[1, :, 17:].abs().sum() == 0
        assert w[2, :, :90].abs().sum() == 0


def test_equals_the_per_sample_path_and_keeps_the_sample_order():
    shapes = [(3, 30, 20), (3, 25, 25), (3, 30, 20), (3, 25, 25), (3, 30, 20)]
    images = [torch.randint(0, 256, s, dtype=torch.uint8) for s in shapes]
    boxes = random_boxes(shapes, np.random.default_rng(1), scale=(0.2, 1.0))
    grouped = crop_resize(images, boxes, 16, "bicubic", grouped=True)
    each = crop_resize(images, boxes, 16, "bicubic", grouped=False)
    assert (grouped - each).abs().max() < 1e-5
    assert (crop_resize(images, boxes, 16) - each).abs().max() == 0  # CPU tensors: the per-sample path


def test_chunks_give_the_same_result(monkeypatch):
    images = [torch.randint(0, 256, (3, 20, 20), dtype=torch.uint8) for _ in range(7)]
    boxes = random_boxes([(3, 20, 20)] * 7, np.random.default_rng(2))
    whole = crop_resize_grouped(images, boxes, 8)
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 2 * 400)  # two images per product
    assert (crop_resize_grouped(images, boxes, 8) - whole).abs().max() < 1e-6  # matmul blocking may differ


def test_very_large_downscale_needs_no_pooling():
    """A 60x downscale, beyond the CUDA antialiased kernel's limit: exact here."""
    img = torch.randint(0, 256, (3, 480, 480), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 480.0, 480.0]])
    out = crop_resize_grouped([img], boxes, 8)
    assert (out.double() - reference([img], boxes, 8, "bicubic")).abs().max() < 2e-5
    # the per-sample path pools first: close to, not equal to, the exact resize
    assert (crop_resize_each([img], boxes, 8) - out).abs().max() < 0.05


class OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def dispatched(fn, n):
    images = [torch.randint(0, 256, (3, 24, 32), dtype=torch.uint8) for _ in range(n)]
    boxes = random_boxes([(3, 24, 32)] * n, np.random.default_rng(n))
    with OpCount() as count:
        fn(images, boxes, 16)
    return count.ops


def test_ops_per_batch_do_not_grow_with_the_samples():
    """What launches kernels on a GPU: the grouped path dispatches as many ops for 32 samples as for 4 (stacking
    the images aside, one op over all of them); one ``F.interpolate`` per crop grows with the batch."""
    assert dispatched(crop_resize_grouped, 32) == dispatched(crop_resize_grouped, 4)
    assert dispatched(crop_resize_each, 32) > 4 * dispatched(crop_resize_each, 4) // 2


def test_images_above_the_chunk_size_are_cropped_first_and_the_order_kept(monkeypatch):
    """An image whose float copy would be too large takes the per-sample path; the batch keeps its order."""
    from barlowtwins.transforms import device

    shapes = [(3, 20, 20), (3, 60, 60), (3, 20, 20), (3, 64, 50)]
    images = [torch.randint(0, 256, s, dtype=torch.uint8) for s in shapes]
    boxes = random_boxes(shapes, np.random.default_rng(3), scale=(0.3, 1.0))
    monkeypatch.setattr(device, "CHUNK_PIXELS", 1000)  # the 60x60 and 64x50 images are "big"
    calls = []
    real = device.crop_resize_each
    monkeypatch.setattr(device, "crop_resize_each", lambda imgs, *a: calls.append(len(imgs)) or real(imgs, *a))
    out = device.crop_resize(images, boxes, 12, grouped=True)
    assert calls == [2]
    assert (out - real(images, boxes, 12)).abs().max() < 1e-5
