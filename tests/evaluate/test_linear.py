"""The fast linear probe: independent heads, separable features."""

import torch

from barlowtwins.evaluate.linear import fast_linear_probe, train_linear_heads


def test_linear_heads_train_independently():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(120, 6, generator=g), torch.randint(0, 3, (120,), generator=g)
    wa, ba = train_linear_heads(x, y, 3, [0.1, 0.5], [0.0, 1e-3], epochs=3, batch_size=32, seed=4)
    wb, bb = train_linear_heads(x, y, 3, [2.0, 0.5], [0.1, 1e-3], epochs=3, batch_size=32, seed=4)
    assert wa.shape == (2, 6, 3) and ba.shape == (2, 3)
    # Head 1 has the same settings in both runs: another head's lr and wd must not touch it.
    torch.testing.assert_close(wa[1], wb[1])
    torch.testing.assert_close(ba[1], bb[1])
    assert not torch.allclose(wa[0], wb[0])


def test_fast_probe_on_linearly_separable_features():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(10, 5, generator=g)
    x = torch.randn(2000, 10, generator=g)
    y = (x @ w).argmax(1)
    res = fast_linear_probe(x[:1500], y[:1500], x[1500:], y[1500:], 5, epochs=20, lrs=(0.1, 1.0), wds=(0.0,))
    assert res.top1 > 95 and res.top5 == 100.0
    assert len(res.grid) == 2 and res.lr in (0.1, 1.0)
    again = fast_linear_probe(x[:1500], y[:1500], x[1500:], y[1500:], 5, epochs=20, lrs=(0.1, 1.0), wds=(0.0,))
    assert again.top1 == res.top1  # seeded: repeatable
