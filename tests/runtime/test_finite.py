"""`nonfinite_names`: which floating-point tensors hold a NaN or an Inf, in the order given."""

import torch

from barlowtwins.runtime.finite import nonfinite_names


def test_nonfinite_names():
    named = [("a", torch.ones(3)), ("b", torch.tensor([1.0, float("nan")])), ("c", torch.tensor([float("-inf")])),
             ("i", torch.tensor([1, 2])), ("e", torch.empty(0)), ("h", torch.tensor([1.0], dtype=torch.float16))]
    assert nonfinite_names(named) == ["b", "c"]
    assert nonfinite_names([]) == []


def test_the_order_given_is_kept_and_non_tensors_are_skipped():
    bad = torch.tensor([float("inf")])
    named = [("z", bad), ("n", None), ("s", 3.0), ("a", bad.clone()), ("m", torch.full((2, 2), float("nan")))]
    assert nonfinite_names(named) == ["z", "a", "m"]
    assert nonfinite_names(iter([("g", torch.zeros(4))])) == []  # any iterable, e.g. named_parameters()


def test_parameters_with_gradients_and_bfloat16_are_checked():
    net = torch.nn.Linear(3, 2)
    with torch.no_grad():
        net.bias[1] = float("nan")
    assert nonfinite_names(net.named_parameters()) == ["bias"]  # requires_grad tensors too
    assert nonfinite_names([("w", torch.tensor([1e38, -1e38], dtype=torch.bfloat16) * 1e10)]) == ["w"]
