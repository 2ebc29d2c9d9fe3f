"""Multi-crop's loss terms against a float64 transcription of the formula, its gradient, the paper's two-view loss
left exactly as it was, and the model's pass over the small crops."""

import numpy as np
import pytest
import torch

from barlowtwins.models.barlow_twins import build_model
from barlowtwins.models.loss import BarlowTwinsLoss, barlow_twins_loss

LAMBD = 0.02


def bt_reference(a: np.ndarray, b: np.ndarray, lambd: float, eps: float = 1e-5) -> float:
    """The paper's loss of two (N, D) batches in float64 numpy."""
    def std(z):
        return (z - z.mean(0)) / np.sqrt(z.var(0) + eps)

    c = std(a).T @ std(b) / a.shape[0]
    off = c - np.diag(np.diag(c))
    return float(((1 - np.diag(c)) ** 2).sum() + lambd * (off ** 2).sum())


def multicrop_reference(z1, z2, crops, weight, lambd=LAMBD) -> tuple[float, float]:
    """(total loss, crop term): L(1, 2) + w (1/M) sum_k (L(1, k) + L(2, k)) / 2."""
    term = np.mean([(bt_reference(z1, zk, lambd) + bt_reference(z2, zk, lambd)) / 2 for zk in crops])
    return bt_reference(z1, z2, lambd) + weight * term, float(term)


def embeddings(n=10, d=5, m=3, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z1 = torch.randn(n, d, generator=g, dtype=dtype) * 2 + 1
    z2 = z1 + torch.randn(n, d, generator=g, dtype=dtype)
    crops = [z1 + 2 * torch.randn(n, d, generator=g, dtype=dtype) for _ in range(m)]
    return z1, z2, crops


@pytest.mark.parametrize("m,weight", [(1, 1.0), (3, 1.0), (4, 0.5)])
def test_equals_the_float64_reference(m, weight):
    z1, z2, crops = embeddings(m=m)
    out = barlow_twins_loss(z1, z2, LAMBD, distributed=False, crops=crops, crop_weight=weight)
    total, term = multicrop_reference(z1.numpy(), z2.numpy(), [c.numpy() for c in crops], weight)
    assert out.loss.dtype == torch.float64
    assert float(out.loss) == pytest.approx(total, rel=1e-10)
    assert float(out.crops) == pytest.approx(term, rel=1e-10)


def test_the_two_view_loss_is_exactly_the_papers_with_or_without_crops():
    z1, z2, crops = embeddings(dtype=torch.float32)
    plain = barlow_twins_loss(z1, z2, LAMBD, distributed=False, c_block=3)
    with_crops = barlow_twins_loss(z1, z2, LAMBD, distributed=False, c_block=3, crops=crops, crop_weight=0.7)
    assert torch.equal(plain.on_diag, with_crops.on_diag) and torch.equal(plain.off_diag, with_crops.off_diag)
    assert torch.equal(plain.c_block, with_crops.c_block)
    assert torch.equal(with_crops.loss, plain.loss + 0.7 * with_crops.crops)
    assert plain.crops is None
    assert float(barlow_twins_loss(z1, z2, LAMBD, distributed=False, crops=crops, crop_weight=0.0).loss) == \
        float(plain.loss)


def test_a_crop_equal_to_a_view_gives_the_two_view_loss_as_its_term():
    """L(1, k) with z_k = z2 is L(1, 2); L(2, k) with z_k = z2 is L(2, 2): the term is their mean."""
    z1, z2, _ = embeddings()
    out = barlow_twins_loss(z1, z2, LAMBD, distributed=False, crops=[z2.clone()])
    expected = (bt_reference(z1.numpy(), z2.numpy(), LAMBD) + bt_reference(z2.numpy(), z2.numpy(), LAMBD)) / 2
    assert float(out.crops) == pytest.approx(expected, rel=1e-10)


def test_gradient_matches_the_reference():
    z1, z2, crops = embeddings(n=6, d=3, m=2)
    inputs = [t.clone().requires_grad_() for t in (z1, z2, *crops)]
    torch.autograd.gradcheck(lambda a, b, c, d: barlow_twins_loss(a, b, LAMBD, distributed=False, crops=[c, d],
                                                                  crop_weight=0.6).loss, inputs)


def test_half_precision_and_shape_errors():
    z1, z2, crops = embeddings(dtype=torch.float32)
    half = barlow_twins_loss(z1.bfloat16(), z2.bfloat16(), LAMBD, distributed=False,
                             crops=[c.bfloat16() for c in crops])
    assert half.loss.dtype == torch.float32 and torch.isfinite(half.crops)
    with pytest.raises(ValueError, match="same shape"):
        barlow_twins_loss(z1, z2, LAMBD, distributed=False, crops=[crops[0][:, :3]])


def test_the_module_forwards_crops_and_weight():
    z1, z2, crops = embeddings()
    loss_fn = BarlowTwinsLoss(lambd=LAMBD)
    total, term = multicrop_reference(z1.numpy(), z2.numpy(), [c.numpy() for c in crops], 2.0)
    assert float(loss_fn(z1, z2, crops=crops, crop_weight=2.0)) == pytest.approx(total, rel=1e-10)
    parts = loss_fn(z1, z2, crops=crops, crop_weight=torch.tensor(2.0, dtype=torch.float64), return_parts=True)
    assert float(parts.crops) == pytest.approx(term, rel=1e-10)


def test_the_model_embeds_same_size_crops_in_one_pass_and_keeps_their_order():
    torch.manual_seed(0)
    model = build_model("resnet18", "16-16", stem="small", width=4, lambd=LAMBD).double()
    g = torch.Generator().manual_seed(1)
    x1, x2 = (torch.randn(6, 3, 16, 16, generator=g, dtype=torch.float64) for _ in range(2))
    crops = [torch.randn(6, 3, 8, 8, generator=g, dtype=torch.float64) for _ in range(3)]
    calls = []
    hook = model.backbone.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    out = model(x1, x2, return_parts=True, crops=crops, crop_weight=1.5)
    hook.remove()
    assert calls == [(6, 3, 16, 16), (6, 3, 16, 16), (18, 3, 8, 8)]  # two views, then every crop at once
    z1, z2 = model.embed(x1), model.embed(x2)
    zc = model.embed(torch.cat(crops)).chunk(3)
    total, term = multicrop_reference(z1.detach().numpy(), z2.detach().numpy(), [z.detach().numpy() for z in zc],
                                      1.5)
    assert out.loss.item() == pytest.approx(total, rel=1e-9)
    assert out.crops.item() == pytest.approx(term, rel=1e-9)
    # crops of two sizes: one pass per size, the embeddings back in the crops' order
    mixed = [crops[0], torch.randn(6, 3, 12, 12, dtype=torch.float64), crops[1]]
    got = model.embed_crops(mixed)
    ref = model.embed(torch.cat([crops[0], crops[1]])).chunk(2)
    assert torch.allclose(got[0], ref[0]) and torch.allclose(got[2], ref[1])
    assert got[1].shape == (6, 16)
