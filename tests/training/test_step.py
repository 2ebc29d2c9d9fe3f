"""`optimizer_step`: one Barlow Twins step on given views (forward, zero_grad, backward, optimiser step), the
same as doing it by hand, with no gradient of an earlier step leaking in."""

import copy
from types import SimpleNamespace

import torch
from conftest import random_images

from barlowtwins.models.barlow_twins import build_model
from barlowtwins.training.step import optimizer_step

CPU = torch.device("cpu")


def _model():
    torch.manual_seed(0)
    return build_model("resnet18", "32-32", stem="small", width=8)


def test_a_step_is_the_forward_backward_and_update_done_by_hand():
    model, x1, x2 = _model(), random_images(4), random_images(4).flip(3)
    ref = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():  # stale gradients from elsewhere: set to None before the backward
        p.grad = torch.full_like(p, 1e3)
    result = optimizer_step(model, opt, CPU, None, x1, x2)
    by_hand = ref(x1, x2, return_parts=True)
    ref_opt.zero_grad()
    by_hand.loss.backward()
    ref_opt.step()
    assert torch.isfinite(result.loss) and torch.equal(result.loss, by_hand.loss)
    assert torch.equal(result.on_diag, by_hand.on_diag) and torch.equal(result.off_diag, by_hand.off_diag)
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    before = _model().state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in model.state_dict().items())  # it did train


class Recorder(torch.nn.Module):
    """Records how it is called; its loss is the squared weight."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))
        self.calls = []

    def forward(self, x1, x2, **kwargs):
        self.calls.append((x1, x2, kwargs))
        return SimpleNamespace(loss=self.w ** 2, parts=kwargs)


def test_the_extra_arguments_reach_the_model_and_its_result_is_returned():
    model = Recorder()
    x1, x2 = torch.zeros(1), torch.ones(1)
    out = optimizer_step(model, torch.optim.SGD(model.parameters(), lr=0.25), CPU, None, x1, x2, crops=["c"])
    (a, b, kwargs), = model.calls
    assert a is x1 and b is x2 and kwargs == {"return_parts": True, "crops": ["c"]}
    assert out.parts is kwargs and float(model.w.detach()) == 2.0 - 0.25 * 4.0  # d(w²)/dw = 2w = 4
