"""The batched crop-and-resize over a zero-padded batch (`transforms.resize`) against PyTorch's own antialiased
resize in float64, its layout (orientation, chunks), its launch count (the same for 64 distinct image sizes
as for 8 or 1) and its freedom from host syncs (it runs on meta tensors)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from device_crop_ops import OpCount  # benchmarks/: the same count the benchmark reports
from torch.utils._python_dispatch import TorchDispatchMode

from barlowtwins.transforms import resize
from barlowtwins.transforms.device import crop_resize, crop_resize_each
from barlowtwins.transforms.resize import crop_resize_grouped, crop_resize_padded, padded_layout, resize_weights


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


def random_images(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, s, dtype=torch.uint8, generator=g) for s in shapes]


def mixed_shapes(n, rng, lo=5, hi=90):
    """n images of distinct random sizes, portrait and landscape (and square) mixed."""
    seen, shapes = set(), []
    while len(shapes) < n:
        hw = (int(rng.integers(lo, hi)), int(rng.integers(lo, hi)))
        if hw not in seen:
            seen.add(hw)
            shapes.append((3, *hw))
    return shapes


@pytest.mark.parametrize("mode", ["bicubic", "bilinear", "nearest"])
@pytest.mark.parametrize("size", [7, 24])
def test_equals_float64_interpolate_for_mixed_sizes_and_any_crop(mode, size):
    rng = np.random.default_rng(0)
    shapes = mixed_shapes(14, rng) + [(3, 40, 56), (3, 56, 40), (3, 17, 9), (3, 300, 30), (3, 1, 1), (3, 2, 64)]
    images = random_images(shapes)
    boxes = random_boxes(shapes, rng)
    boxes[0] = torch.tensor([0, 0, shapes[0][1], shapes[0][2]])  # the whole image
    boxes[14] = torch.tensor([39, 55, 1, 1])  # one pixel in the corner: upsampled
    boxes[15] = torch.tensor([3, 1, 51, 37])  # odd box of a portrait image
    boxes[16] = torch.tensor([0, 8, 17, 1])  # one column, stretched
    boxes[17] = torch.tensor([0, 0, 300, 30])  # a 300/size downscale (no pooling needed)
    boxes[18] = torch.tensor([0, 0, 1, 1])  # a 1 x 1 image
    boxes[19] = torch.tensor([1, 3, 1, 61])  # one row of a 2-row image
    out = crop_resize_padded(images, boxes, size, mode)
    assert out.shape == (len(images), 3, size, size) and out.dtype == torch.float32
    ref = reference(images, boxes, size, mode)
    assert (out.double() - ref).abs().max() < 2e-5
    assert crop_resize_grouped is crop_resize_padded  # the earlier name still works


@pytest.mark.parametrize("mode", ["bicubic", "nearest"])
def test_chunks_give_the_same_result(monkeypatch, mode):
    rng = np.random.default_rng(2)
    shapes = mixed_shapes(9, rng, 10, 40)
    images, boxes = random_images(shapes, 1), random_boxes(shapes, rng)
    whole = crop_resize_padded(images, boxes, 8, mode)
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 2 * 40 * 40)  # two to a few images per product
    assert len(padded_layout([s[1:] for s in shapes])[3]) > 2
    assert (crop_resize_padded(images, boxes, 8, mode) - whole).abs().max() < 1e-6  # matmul blocking may differ
    assert (whole.double() - reference(images, boxes, 8, mode)).abs().max() < 2e-5


def test_the_layout_places_images_landscape_sorted_in_chunks_within_the_budget(monkeypatch):
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 6000)
    shapes = [(10, 20), (40, 30), (30, 40), (5, 5), (100, 90), (12, 11), (20, 10)]
    tall, placed, order, chunks = padded_layout(shapes)
    assert tall.tolist() == [False, True, False, False, True, True, True]
    assert placed.tolist() == [[10, 20], [30, 40], [30, 40], [5, 5], [90, 100], [11, 12], [10, 20]]
    widths = placed[order, 1]
    assert (np.diff(widths) <= 0).all()  # widest first
    assert sorted(order.tolist()) == list(range(len(shapes)))
    assert chunks[0] == (0, 1)  # the 90 x 100 image (9000 px, over the budget) alone
    assert [a for a, _ in chunks[1:]] == [b for _, b in chunks[:-1]] and chunks[-1][1] == len(shapes)
    for a, b in chunks[1:]:
        idx = order[a:b]
        assert (b - a) * placed[idx, 0].max() * placed[idx, 1].max() <= 6000
    assert padded_layout([])[3] == []


def test_weights_rows_sum_to_one_and_stay_inside_the_crop():
    starts, lengths = torch.tensor([0.0, 5.0, 90.0]), torch.tensor([100.0, 12.0, 10.0])
    for mode in ("bicubic", "bilinear", "nearest"):
        w = resize_weights(starts, lengths, 100, 16, mode)
        assert w.shape == (3, 16, 100)
        assert torch.allclose(w.sum(-1), torch.ones(3, 16), atol=1e-6)
        assert w[1, :, :5].abs().sum() == 0 and w[1, :, 17:].abs().sum() == 0
        assert w[2, :, :90].abs().sum() == 0
        # padding the axis (a larger in_size) adds zero columns only: the padded batch's matrices are exact
        assert torch.equal(resize_weights(starts, lengths, 130, 16, mode)[..., :100], w)


def test_equals_the_per_sample_path_and_keeps_the_sample_order():
    shapes = [(3, 30, 20), (3, 25, 25), (3, 30, 20), (3, 25, 25), (3, 20, 30)]
    images = random_images(shapes, 4)
    boxes = random_boxes(shapes, np.random.default_rng(1), scale=(0.2, 1.0))
    batched = crop_resize(images, boxes, 16, "bicubic", grouped=True)
    each = crop_resize(images, boxes, 16, "bicubic", grouped=False)
    assert (batched - each).abs().max() < 1e-5
    assert (crop_resize(images, boxes, 16) - each).abs().max() == 0  # CPU tensors: the per-sample path


def test_very_large_downscale_needs_no_pooling():
    """A 60x downscale, beyond the CUDA antialiased kernel's limit: exact here."""
    img = torch.randint(0, 256, (3, 480, 480), dtype=torch.uint8)
    boxes = torch.tensor([[0.0, 0.0, 480.0, 480.0]])
    out = crop_resize_padded([img], boxes, 8)
    assert (out.double() - reference([img], boxes, 8, "bicubic")).abs().max() < 2e-5
    # the per-sample path pools first: close to, not equal to, the exact resize
    assert (crop_resize_each([img], boxes, 8) - out).abs().max() < 0.05


def counted(fn, shapes, size=16, mode="bicubic", seed=0):
    images = random_images(shapes, seed)
    boxes = random_boxes(shapes, np.random.default_rng(seed), scale=(0.1, 0.9))
    with OpCount() as count:
        fn(images, boxes, size, mode)
    return count


def sizes_of(n, distinct, rng):
    """n image shapes with ``distinct`` different sizes (portrait and landscape), each used n / distinct times."""
    kinds = mixed_shapes(distinct, rng, 20, 60)
    return [kinds[k % distinct] for k in range(n)]


def test_ops_do_not_grow_with_the_number_of_distinct_image_sizes():
    """What launches kernels on a GPU: the batched crop dispatches as many ops for 64 images of 64 different sizes
    as for 64 images of 8 sizes or of one (the per-group matmuls it replaces: about 110 per distinct shape)."""
    rng = np.random.default_rng(5)
    counts = {d: counted(crop_resize_padded, sizes_of(64, d, rng)) for d in (64, 8, 2, 1)}
    assert counts[64].ops == counts[8].ops == counts[2].ops
    assert counts[64].kernels == counts[8].kernels == counts[2].kernels
    assert counts[64].ops < 64 * 10  # a fixed part and a few ops (views and one copy) per image
    assert counts[1].kernels < counts[8].kernels  # one shape: stacked, one copy for all


def test_a_chunk_of_one_shape_is_stacked_and_exact():
    """Landscape and portrait images of one placed shape (40 x 56 and 56 x 40): stacked, no padding."""
    rng = np.random.default_rng(8)
    shapes = [(3, 40, 56), (3, 56, 40)] * 3
    images, boxes = random_images(shapes, 2), random_boxes(shapes, rng)
    for mode in ("bicubic", "bilinear", "nearest"):
        out = crop_resize_padded(images, boxes, 12, mode)
        assert (out.double() - reference(images, boxes, 12, mode)).abs().max() < 2e-5
    n = len(shapes)
    assert counted(crop_resize_padded, shapes).kernels < resize.PADDED_CALL_LAUNCHES + resize.PADDED_CHUNK_LAUNCHES + n


def test_the_kernels_counted_for_the_choice_of_crop_are_those_dispatched(monkeypatch):
    """`crop_method` weighs `PADDED_*_LAUNCHES`: they are the kernels the batched crop launches (bicubic; the
    others launch fewer), per call, chunk and image."""
    rng = np.random.default_rng(6)
    shapes = mixed_shapes(12, rng, 20, 40)

    def expected(n, chunks):
        return resize.PADDED_CALL_LAUNCHES + resize.PADDED_CHUNK_LAUNCHES * chunks + resize.PADDED_IMAGE_LAUNCHES * n

    for n in (2, 5, 12):
        assert counted(crop_resize_padded, shapes[:n]).kernels == expected(n, 1)
        for mode in ("bilinear", "nearest"):
            assert counted(crop_resize_padded, shapes[:n], mode=mode).kernels <= expected(n, 1)
    monkeypatch.setattr(resize, "CHUNK_PIXELS", 3 * 40 * 40)
    chunks = padded_layout([s[1:] for s in shapes])[3]
    assert len(chunks) >= 3 and all(b - a >= 2 for a, b in chunks)  # (a chunk of one image skips 4 copies)
    assert counted(crop_resize_padded, shapes).kernels == expected(12, len(chunks))


class NoHostReads(TorchDispatchMode):
    """Fails on an op whose result the host would read from device data (a host sync on CUDA)."""

    READS = {"_local_scalar_dense", "item", "nonzero", "masked_select", "equal", "is_nonzero", "unique",
             "_unique2", "argwhere"}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        assert name not in self.READS, name
        if name in ("index", "index_put", "index_put_"):
            assert not any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1]), name
        return func(*args, **(kwargs or {}))


def test_no_host_sync_images_on_meta_tensors():
    """Meta tensors have no data: a crop that read device values on the host could not run on them."""
    rng = np.random.default_rng(7)
    shapes = mixed_shapes(10, rng)
    images = [torch.empty(s, dtype=torch.uint8, device="meta") for s in shapes]
    boxes = random_boxes(shapes, rng)
    with NoHostReads():
        out = crop_resize_padded(images, boxes, 12)
    assert out.shape == (10, 3, 12, 12) and out.device.type == "meta"


def test_images_above_the_chunk_size_are_cropped_first_and_the_order_kept(monkeypatch):
    """An image whose float copy would be too large takes the per-sample path; the batch keeps its order."""
    from barlowtwins.transforms import device

    shapes = [(3, 20, 20), (3, 60, 60), (3, 20, 20), (3, 64, 50)]
    images = random_images(shapes, 3)
    boxes = random_boxes(shapes, np.random.default_rng(3), scale=(0.3, 1.0))
    monkeypatch.setattr(device, "CHUNK_PIXELS", 1000)  # the 60x60 and 64x50 images are "big"
    calls = []
    real = device.crop_resize_each
    monkeypatch.setattr(device, "crop_resize_each", lambda imgs, *a: calls.append(len(imgs)) or real(imgs, *a))
    out = device.crop_resize(images, boxes, 12, grouped=True)
    assert calls == [2]
    assert (out - real(images, boxes, 12)).abs().max() < 1e-5
