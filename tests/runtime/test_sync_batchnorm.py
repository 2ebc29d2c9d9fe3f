"""`SyncBatchNorm` on 2 CPU processes (gloo) equals plain BatchNorm over the concatenated global batch in float64:
forward, backward (input, weight and bias gradients), running statistics and num_batches_tracked, with momentum 0.1
and None, 2-D and 4-D inputs, float32 and float64, equal and unequal (even empty) per-rank batches. torch's
``nn.SyncBatchNorm`` refuses CPU tensors, so a float64 ``nn.BatchNorm1d``/``2d`` on the whole batch stands in for it
as the reference. A dispatch-level count shows that forward and backward make no host sync: no ``.item()``/
``float()`` of a tensor, no ``nonzero``, no ``masked_select``, no boolean-mask indexing."""

import dist_workers
import pytest
import torch
from conftest import spawn
from torch import nn

from barlowtwins.runtime import distributed as D

STEPS = 3  # three updates: the cumulative average of momentum=None is more than the last batch's statistics


def _case(shape, momentum, dtype, split=(4, 4), seed=0, offset=0.0) -> dict:
    assert sum(split) == shape[0], "the ranks' rows must make up the global batch"
    return {"shape": list(shape), "momentum": momentum, "dtype": dtype, "split": list(split), "seed": seed,
            "offset": offset}


CASES = {f"{len(shape)}d-m{momentum}-{dtype}": _case(shape, momentum, dtype, seed=i)
         for i, (shape, momentum, dtype) in enumerate(
             (s, m, d) for s in ((8, 5), (8, 3, 4, 4)) for m in (0.1, None) for d in ("float32", "float64"))}
CASES["4d-unequal-3-5"] = _case((8, 3, 4, 4), 0.1, "float64", split=(3, 5), seed=20)
CASES["4d-empty-rank"] = _case((8, 3, 2, 2), None, "float64", split=(0, 8), seed=21)
CASES["2d-offset-1000-float32"] = _case((16, 4), 0.1, "float32", split=(8, 8), seed=22,
                                         offset=1000.0)

# float64 SyncBN agrees with float64 BatchNorm to rounding; float32 to float32 rounding of O(1) values, and of
# values near 1000 (spacing 6e-5) in the offset case
TOLERANCE = {"float64": dict(rtol=1e-9, atol=1e-10), "float32": dict(rtol=1e-4, atol=2e-5),
             "offset": dict(rtol=1e-4, atol=2e-4)}


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory):
    """Every case run once on 2 ranks (one spawn for all of them: process start-up dominates)."""
    out = tmp_path_factory.mktemp("sync_bn")
    spawn(dist_workers.sync_bn_cases, str(out), CASES, STEPS)
    return [torch.load(out / f"bn_cases{rank}.pt") for rank in range(2)]


def _reference(case: dict) -> dict:
    """Plain float64 BatchNorm on the whole global batch, the same steps, loss sum(y * g); its inputs are those
    the ranks see (rounded to the case's dtype), so only the computation differs."""
    data = dist_workers.sync_bn_case_data(case, STEPS)
    rounded = getattr(torch, case["dtype"])
    data["batches"] = [(x.to(rounded).double(), g.to(rounded).double()) for x, g in data["batches"]]
    c = case["shape"][1]
    bn = (nn.BatchNorm1d if len(case["shape"]) == 2 else nn.BatchNorm2d)(c, momentum=case["momentum"]).double()
    with torch.no_grad():
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(bn, key).copy_(data[key])
    steps = []
    for x, g in data["batches"]:
        x = x.clone().requires_grad_()
        bn.zero_grad()
        y = bn(x)
        (y * g).sum().backward()
        steps.append({"y": y.detach(), "grad_x": x.grad, "grad_weight": bn.weight.grad.clone(),
                      "grad_bias": bn.bias.grad.clone()})
    bn.eval()
    with torch.no_grad():
        eval_y = bn(data["batches"][-1][0])
    return {"steps": steps, "eval_y": eval_y, "running_mean": bn.running_mean, "running_var": bn.running_var,
            "num_batches_tracked": bn.num_batches_tracked}


@pytest.mark.parametrize("name", list(CASES))
def test_sync_batchnorm_equals_batchnorm_on_the_global_batch(rank_results, name):
    case, ref = CASES[name], _reference(CASES[name])
    tol = TOLERANCE["offset" if case["offset"] else case["dtype"]]
    for rank, results in enumerate(rank_results):
        mine, r = dist_workers.rank_rows(case["split"], rank), results[name]
        for step, (got, want) in enumerate(zip(r["steps"], ref["steps"])):
            for key in ("y", "grad_x"):
                assert got[key].dtype == getattr(torch, case["dtype"])
                torch.testing.assert_close(got[key].double(), want[key][mine], **tol, msg=f"{key} step {step}")
        torch.testing.assert_close(r["eval_y"].double(), ref["eval_y"][mine], **tol)
        for key in ("running_mean", "running_var"):
            torch.testing.assert_close(r[key].double(), ref[key], **tol, msg=key)
        assert int(r["num_batches_tracked"]) == int(ref["num_batches_tracked"]) == STEPS
    for step in range(STEPS):
        # weight and bias are used on each rank's rows only: their gradients sum over ranks (DDP's average of
        # these, times the world, with the loss every rank back-propagates) to the global batch's gradient
        for key in ("grad_weight", "grad_bias"):
            total = sum(results[name]["steps"][step][key].double() for results in rank_results)
            torch.testing.assert_close(total, ref["steps"][step][key], **tol, msg=f"{key} step {step}")


def test_sync_batchnorm_makes_no_host_sync(tmp_path):
    """Forward + backward (two steps, momentum 0.1 and None, 4-D and 2-D BN) dispatch no host-syncing op, and
    every BN layer's four all-reduces (two forward, two backward) are seen by the same count."""
    spawn(dist_workers.sync_bn_ops, str(tmp_path))
    for rank in range(2):
        report = torch.load(tmp_path / f"ops{rank}.pt")
        for momentum, r in report.items():
            # convert_sync_batchnorm(.., "cuda") gave ours, not torch's nn.SyncBatchNorm
            assert r["types"].count("barlowtwins.runtime.distributed.SyncBatchNorm") == 2, r["types"]
            assert r["syncing"] == [], (momentum, r["syncing"])
            collectives = [op for op in r["ops"] if op.startswith("c10d.allreduce")]
            assert len(collectives) == 2 * 2 * 4, (momentum, collectives)  # 2 steps x 2 layers x (2 fwd + 2 bwd)
            assert "aten.convolution_backward" in r["ops"]  # the backward pass ran under the count too


def test_the_host_sync_count_sees_every_kind_of_sync():
    """The detector of the test above flags each host-syncing pattern (so its empty list means something):
    float() and .item() of a tensor, bool() of one, nonzero, masked_select, and indexing with a boolean mask."""
    x = torch.randn(6)
    patterns = {"float": lambda: float(x.sum()), "item": lambda: x.max().item(), "bool": lambda: bool(x[0] > 0),
                "nonzero": lambda: torch.nonzero(x > 0), "masked_select": lambda: x.masked_select(x > 0),
                "mask index": lambda: x[x > 0], "mask assign": lambda: x.clone().__setitem__(x > 0, 0.0),
                "old cumulative momentum": lambda: 1.0 / float(torch.tensor(3))}
    for name, fn in patterns.items():
        with dist_workers.HostSyncOps() as mode:
            fn()
        assert mode.syncing, name
    with dist_workers.HostSyncOps() as mode:  # and a sync-free computation passes
        (x * 2 + x.sum() / x.numel()).rsqrt()
        x[1:4].clone()[torch.tensor([0, 2])]
    assert mode.syncing == [] and mode.ops


def test_convert_sync_batchnorm_keeps_the_tensors_and_uses_ours_on_every_device():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=None), nn.Sequential(nn.BatchNorm1d(5)))
    net[1].eval()
    bn, inner = net[1], net[2][0]
    for device_type in ("cpu", "cuda", "mps"):
        out = D.convert_sync_batchnorm(net, device_type)
        assert isinstance(out[1], D.SyncBatchNorm) and isinstance(out[2][0], D.SyncBatchNorm), device_type
        assert out[1].weight is bn.weight and out[1].running_var is bn.running_var
        assert out[1].num_batches_tracked is bn.num_batches_tracked and out[1].momentum is None
        assert not out[1].training and out[2][0].training
        assert out[2][0].running_mean is inner.running_mean
    sync = D.SyncBatchNorm(3)
    assert D.convert_sync_batchnorm(sync) is sync  # already synchronised: left alone


def test_sync_batchnorm_is_plain_batchnorm_without_a_process_group():
    torch.manual_seed(0)
    plain, sync = nn.BatchNorm2d(3, momentum=None), D.SyncBatchNorm(3, momentum=None)
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(sync(x), plain(x), rtol=0, atol=0)
    torch.testing.assert_close(sync.running_var, plain.running_var, rtol=0, atol=0)
    with pytest.raises(ValueError, match="2-D"):
        sync(torch.randn(3))
