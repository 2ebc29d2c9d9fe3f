"""The loss against an independent float64 implementation of the paper's formula, plus invariances and edges."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from barlowtwins.models.loss import BarlowTwinsLoss, barlow_twins_loss, cross_correlation


def reference_loss(z1: np.ndarray, z2: np.ndarray, lambd: float, eps: float = 1e-5):
    """Paper eq. (1) in float64 numpy, written independently: explicit standardisation, C, masks."""
    z1 = np.asarray(z1, dtype=np.float64)
    z2 = np.asarray(z2, dtype=np.float64)
    n, d = z1.shape

    def standardise(z):
        mean = z.sum(axis=0) / n
        var = ((z - mean) ** 2).sum(axis=0) / n  # biased, as BatchNorm in training
        return (z - mean) / np.sqrt(var + eps)

    a, b = standardise(z1), standardise(z2)
    c = np.zeros((d, d))
    for i in range(d):
        for j in range(d):
            c[i, j] = np.sum(a[:, i] * b[:, j]) / n
    on = sum((1.0 - c[i, i]) ** 2 for i in range(d))
    off = sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j)
    return on + lambd * off, on, off, c


@pytest.mark.parametrize("n,d", [(2, 3), (8, 5), (32, 16), (5, 40), (64, 1)])
@pytest.mark.parametrize("lambd", [0.0051, 0.5])
def test_matches_float64_reference(n, d, lambd):
    g = torch.Generator().manual_seed(n * 100 + d)
    z1 = torch.randn(n, d, generator=g) * 3 + 1
    z2 = 0.6 * z1 + torch.randn(n, d, generator=g)
    out = BarlowTwinsLoss(lambd)(z1, z2, return_parts=True)
    loss, on, off, c = reference_loss(z1.numpy(), z2.numpy(), lambd)
    assert out.loss.dtype == torch.float32
    np.testing.assert_allclose(out.loss.item(), loss, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.on_diag.item(), on, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.off_diag.item(), off, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(cross_correlation(z1, z2).numpy(), c, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k", [1, 4, 16, 64])
def test_c_block_is_the_top_left_block_of_c(k):
    g = torch.Generator().manual_seed(k)
    z1 = torch.randn(24, 16, generator=g) * 2 - 1
    z2 = 0.5 * z1 + torch.randn(24, 16, generator=g)
    out = BarlowTwinsLoss(0.0051, c_block=k)(z1, z2, return_parts=True)
    c = reference_loss(z1.numpy(), z2.numpy(), 0.0051)[3]
    kk = min(k, 16)  # a block wider than D is all of C
    assert out.c_block.shape == (kk, kk) and out.c_block.dtype == torch.float32 and not out.c_block.requires_grad
    np.testing.assert_allclose(out.c_block.numpy(), c[:kk, :kk], rtol=1e-4, atol=1e-5)
    assert BarlowTwinsLoss(0.0051)(z1, z2, return_parts=True).c_block is None  # only when asked
    with torch.autocast("cpu", dtype=torch.bfloat16):  # half-precision input: the block is of the float32 C
        half = BarlowTwinsLoss(0.0051, c_block=k)(z1.bfloat16(), z2.bfloat16(), return_parts=True)
    assert half.c_block.dtype == torch.float32 and half.c_block.device == z1.device


def test_float64_inputs_match_reference_tightly():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(16, 12, generator=g, dtype=torch.float64)
    z2 = torch.randn(16, 12, generator=g, dtype=torch.float64)
    out = barlow_twins_loss(z1, z2, lambd=0.0051)
    np.testing.assert_allclose(out.loss.item(), reference_loss(z1.numpy(), z2.numpy(), 0.0051)[0], rtol=1e-10)


def test_invariant_to_per_dimension_affine_rescaling():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(32, 10, generator=g), torch.randn(32, 10, generator=g)
    z2 = z2 + 0.8 * z1
    base = barlow_twins_loss(z1, z2).loss
    scale1, shift1 = torch.rand(10, generator=g) * 3 + 0.5, torch.randn(10, generator=g) * 5
    scale2, shift2 = torch.rand(10, generator=g) * 3 + 0.5, torch.randn(10, generator=g) * 5
    torch.testing.assert_close(barlow_twins_loss(z1 * scale1 + shift1, z2).loss, base, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(barlow_twins_loss(z1, z2 * scale2 + shift2).loss, base, rtol=1e-4, atol=1e-4)
    # ... and to the order of the samples in the batch (the same permutation for both views).
    perm = torch.randperm(32, generator=g)
    torch.testing.assert_close(barlow_twins_loss(z1[perm], z2[perm]).loss, base, rtol=1e-5, atol=1e-5)


def test_gradients_float64_gradcheck():
    g = torch.Generator().manual_seed(3)
    z1 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: barlow_twins_loss(a, b, lambd=0.3).loss, (z1, z2))


def test_identical_views_give_unit_diagonal():
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(4))
    c = cross_correlation(z, z)
    torch.testing.assert_close(torch.diagonal(c), torch.ones(8), rtol=1e-4, atol=1e-4)


def test_terms_for_ablations():
    z1, z2 = torch.randn(16, 6), torch.randn(16, 6)
    both = barlow_twins_loss(z1, z2, lambd=0.1)
    on = barlow_twins_loss(z1, z2, lambd=0.1, terms="on-diagonal")
    off = barlow_twins_loss(z1, z2, lambd=0.1, terms="off-diagonal")
    torch.testing.assert_close(on.loss, both.on_diag)
    torch.testing.assert_close(off.loss, 0.1 * both.off_diag)
    with pytest.raises(ValueError, match="unknown terms"):
        BarlowTwinsLoss(terms="diagonal")


def test_batch_of_one_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 2 samples"):
        barlow_twins_loss(torch.randn(1, 4), torch.randn(1, 4))


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        barlow_twins_loss(torch.randn(4, 4), torch.randn(4, 5))


def test_collapsed_embeddings_are_finite():
    z1 = torch.ones(8, 5, requires_grad=True)
    z2 = torch.ones(8, 5, requires_grad=True)
    out = barlow_twins_loss(z1, z2)
    out.loss.backward()
    assert out.loss.item() == pytest.approx(5.0)  # C = 0: every diagonal term is (1 - 0)^2
    assert torch.isfinite(z1.grad).all() and torch.isfinite(z2.grad).all()


def test_float32_under_autocast():
    z1 = torch.randn(16, 8).bfloat16()
    z2 = torch.randn(16, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = barlow_twins_loss(z1, z2)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, barlow_twins_loss(z1.float(), z2.float()).loss)


class _ShapeLog(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self.ops.append((str(func), tuple(t.shape), t.dtype))
        return out


def test_off_diagonal_sum_builds_no_masked_copy():
    d = 37
    z1, z2 = torch.randn(8, d), torch.randn(8, d)
    with _ShapeLog() as log:
        barlow_twins_loss(z1, z2)
    square = [op for op in log.ops if op[1] == (d, d)]
    # Only C itself: the product z1^T z2 and its division by N. No mask, no squared copy, no index.
    assert len(square) == 2, square
    assert not any(op[2] == torch.bool for op in log.ops), "a boolean mask was built"


def test_module_returns_a_scalar_with_the_functional_value_and_gradients():
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    loss = BarlowTwinsLoss(0.2)(z1, z2)
    assert isinstance(loss, torch.Tensor) and loss.ndim == 0
    loss.backward()  # the trap of a named tuple: .backward() works on what the module returns
    grads = z1.grad.clone(), z2.grad.clone()
    z1.grad = z2.grad = None
    ref = barlow_twins_loss(z1, z2, lambd=0.2)
    ref.loss.backward()
    assert loss.item() == ref.loss.item()
    assert torch.equal(grads[0], z1.grad) and torch.equal(grads[1], z2.grad)
    np.testing.assert_allclose(loss.item(), reference_loss(z1.detach().numpy(), z2.detach().numpy(), 0.2)[0],
                               rtol=1e-10)
    parts = BarlowTwinsLoss(0.2)(z1, z2, return_parts=True)
    assert parts.loss.item() == loss.item() and parts.c_block is None
    with pytest.raises(ValueError, match="c_block"):
        BarlowTwinsLoss(c_block=-1)


def test_the_loss_sums_over_ranks_only_when_asked(monkeypatch):
    """A loss computed on one rank alone must not wait in a collective: `BarlowTwinsLoss()` keeps to its process
    whatever process group exists; ``distributed=True`` (the trainer's, and `build_model`'s) sums over the ranks."""
    import barlowtwins.models.loss as L
    import barlowtwins.models.mixed as M
    from barlowtwins.models.barlow_twins import build_model
    from barlowtwins.training.config import PretrainConfig
    from barlowtwins.training.run import build_pretrain_model

    calls = []

    def counted(t, group=None):  # a 2-rank world whose other rank never answers: record instead of waiting
        calls.append(tuple(t.shape))
        return t

    monkeypatch.setattr(L, "world_size", lambda: 2)
    monkeypatch.setattr(L, "all_reduce_sum", counted)
    monkeypatch.setattr(M, "world_size", lambda: 2)
    monkeypatch.setattr(M, "all_reduce_sum", counted)
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    alone = BarlowTwinsLoss()(z1, z2)
    assert calls == [] and BarlowTwinsLoss().distributed is False
    assert barlow_twins_loss(z1, z2).loss == alone and calls == []  # the functional form too
    cross_correlation(z1, z2)
    assert calls == []
    BarlowTwinsLoss(distributed=True)(z1, z2)
    assert len(calls) == 3  # the means and count, the variances, C
    assert build_model("resnet18", "16-16", stem="small", width=8).loss.distributed is True  # the DDP module
    assert build_model("resnet18", "16-16", stem="small", width=8, distributed=False).loss.distributed is False
    cfg = PretrainConfig(backbone="resnet18", stem="small", width=8, projector="16-16")
    assert build_pretrain_model(cfg).loss.distributed is True
