"""The batched views create no tensor from host data inside a step after the first: on a GPU each such
constructor (``torch.tensor([...], device=cuda)``) is a blocking copy that stalls the host. Audited on CPU
tensors by counting the constructors the ops call."""

import pytest
import torch

from barlowtwins.transforms import device as dev
from barlowtwins.transforms.params import view_params
from barlowtwins.transforms.spec import augment_config, run_ops
from barlowtwins.transforms.tensor import BatchViews


@pytest.fixture
def constructors(monkeypatch):
    calls = []
    for name in ("tensor", "as_tensor"):
        real = getattr(torch, name)

        def spy(*args, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*args, **kw)

        monkeypatch.setattr(torch, name, spy)
    return calls


def test_no_tensor_from_host_data_per_step_after_the_first(constructors):
    cfg = augment_config(16, blur_kernel=5, jitter_p=1.0, grayscale_p=0.5)
    views = BatchViews(cfg)
    images = torch.randint(0, 256, (8, 3, 20, 24), dtype=torch.uint8)
    pos = torch.arange(8).numpy()
    params = [(view_params(cfg, 0, 0, s, pos, 20, 24), view_params(cfg, 1, 0, s, pos, 20, 24)) for s in (0, 1)]
    views.views(images, *params[0])  # the first step may build the cached constants
    run_ops(dev.OPS, list(images), params[0][0], cfg)
    constructors.clear()
    views.views(images, *params[1])
    views.finish(run_ops(dev.OPS, list(images), params[1][0], cfg))
    assert constructors == []
