"""The batched views create no tensor from host data inside a step after the first: on a GPU each such
constructor (``torch.tensor([...], device=cuda)``) is a blocking copy that stalls the host. Audited on CPU
tensors by counting the constructors the ops call, and on meta tensors by watching every host-to-device copy
(each through `to_device`, pinned and non-blocking on CUDA, the first step's constants too)."""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from barlowtwins.runtime import hardware
from barlowtwins.transforms import device as dev
from barlowtwins.transforms import resize, tensor
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


class _HostCopies(TorchDispatchMode):
    """Every copy from the host to another device, with whether `to_device` (pinned, non-blocking on CUDA) made
    it: on CUDA any other such copy is a pageable, blocking one that waits for the stream."""

    def __init__(self, inside: list):
        super().__init__()
        self.inside, self.copies = inside, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name == "_to_copy" and kwargs.get("device") is not None:
            src, dst = args[0].device, torch.device(kwargs["device"])
            if src.type == "cpu" and dst.type != "cpu":
                self.copies.append((tuple(args[0].shape), bool(self.inside)))
        return func(*args, **kwargs)


@pytest.fixture
def marked_to_device(monkeypatch):
    """`to_device` as the views' modules call it, marking the copies made inside it."""
    inside = []

    def marked(t, device):
        inside.append(True)
        try:
            return hardware.to_device(t, device)
        finally:
            inside.pop()

    monkeypatch.setattr(tensor, "to_device", marked)
    monkeypatch.setattr(resize, "_to", marked)
    return inside


@pytest.mark.parametrize("ops", ["tensor", "device"])
def test_every_host_copy_of_every_step_goes_through_to_device_the_first_too(marked_to_device, ops):
    """On meta tensors (a device without data): the first step's constants (the hue's sector offsets, the
    normalisation's mean and std) and every step's per-sample parameters reach the device through `to_device`."""
    cfg = augment_config(16, blur_kernel=5, jitter_p=1.0, grayscale_p=0.5, hue=0.1)
    views = BatchViews(cfg)
    tensor._CONSTANTS.clear()  # a fresh process: the first step builds them
    shapes = [(20 + i % 3, 24) for i in range(8)] if ops == "device" else [(20, 24)] * 8  # tensor: one batch
    audit = _HostCopies(marked_to_device)
    for step in (0, 1):
        heights, widths = np.array([h for h, _ in shapes]), np.array([w for _, w in shapes])
        p = view_params(cfg, 0, 0, step, np.arange(8), heights, widths)
        with audit:
            if ops == "tensor":
                x = torch.empty(8, 3, 20, 24, device="meta")
                out = views.finish(run_ops(tensor.OPS, x, p, cfg))
            else:
                images = [torch.empty(3, h, w, dtype=torch.uint8, device="meta") for h, w in shapes]
                out = views.finish(run_ops(dev.OPS, images, p, cfg))
        assert out.shape == (8, 3, 16, 16) and out.device.type == "meta"
        first = len(audit.copies)
    assert audit.copies and all(made_by_to_device for _, made_by_to_device in audit.copies), audit.copies
    assert (3,) in [s for s, _ in audit.copies[:first]]  # the hue's offsets were among the first step's copies
    assert (1, 3, 1, 1) in [s for s, _ in audit.copies[:first]]  # and the mean and std


def test_the_audit_sees_a_blocking_copy(marked_to_device):
    """The detector of the test above is not blind: a plain ``.to(device)`` is a copy outside `to_device`."""
    audit = _HostCopies(marked_to_device)
    with audit:
        torch.tensor([1.0, 2.0]).to("meta")
        tensor.to_device(torch.tensor([1.0]), torch.device("meta"))
    assert audit.copies == [((2,), False), ((1,), True)]
