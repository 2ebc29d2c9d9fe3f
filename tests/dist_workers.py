"""Worker functions for the tests of tests/runtime/ (spawned processes import them from here)."""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from barlowtwins.models.barlow_twins import build_model
from barlowtwins.runtime import distributed as D
from barlowtwins.training.optim import LARS, lars_param_groups, set_learning_rates


def init(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)


def global_batch(n: int = 8, size: int = 16):
    g = torch.Generator().manual_seed(123)
    x1 = torch.randn(n, 3, size, size, generator=g)
    x2 = x1 + 0.5 * torch.randn(n, 3, size, size, generator=g)
    return x1, x2


def _plain_all_reduce(t: torch.Tensor, group=None) -> torch.Tensor:
    """What the official script does: an in-place all-reduce that autograd does not see."""
    out = t.clone()
    dist.all_reduce(out)
    return out


def gradients_match(rank: int, world: int, port: int, out_dir: str, plain: bool, mix: bool = False,
                    crops: int = 0) -> None:
    """2 ranks vs one process on the global batch; ``mix``: with the Mixed Barlow Twins regulariser, its
    partners and weight drawn per rank as the trainer draws them (`training.mixing.mix_draw`); ``crops``:
    with that many small crops of multi-crop (8 px, weight 1.5)."""
    from barlowtwins.training.mixing import mix_draw

    init(rank, world, port)
    if plain:
        import barlowtwins.models.loss as L

        L.all_reduce_sum = _plain_all_reduce
    torch.manual_seed(0)
    model = build_model("resnet18", "32-32", stem="small", width=8)
    model.c_block = 8  # the report's window on C: global under DDP, as C is
    reference = copy.deepcopy(model)
    reference.loss.distributed = False  # one process on the whole global batch
    ddp = nn.parallel.DistributedDataParallel(D.convert_sync_batchnorm(model, "cpu"), static_graph=True)
    x1, x2 = global_batch()
    g = torch.Generator().manual_seed(7)
    small = [torch.randn(x1.shape[0], 3, 8, 8, generator=g) for _ in range(crops)]
    n = x1.shape[0] // world
    mine = slice(rank * n, (rank + 1) * n)

    opt = LARS(lars_param_groups(ddp.module), weight_decay=1.5e-6)
    ref_opt = LARS(lars_param_groups(reference), weight_decay=1.5e-6)
    report = {}
    for step in range(3):
        for o in (opt, ref_opt):
            set_learning_rates(o, 0.5)
        mine_mix = ref_mix = None
        if mix:
            perm, alpha = mix_draw(0, step, rank, n, n, 1.0)  # blocks of one rank's batch
            ref_perm, ref_alpha = mix_draw(0, step, 0, 2 * n, n, 1.0)
            assert torch.equal(ref_perm[mine] - rank * n, perm) and alpha == ref_alpha
            mine_mix, ref_mix = (perm, alpha, 2.0), (ref_perm, ref_alpha, 2.0)
        extra = dict(crops=[c[mine] for c in small], crop_weight=1.5) if crops else {}
        ref_extra = dict(crops=small, crop_weight=1.5) if crops else {}
        out = ddp(x1[mine], x2[mine], return_parts=True, mix=mine_mix, **extra)
        ref = reference(x1, x2, return_parts=True, mix=ref_mix, **ref_extra)
        opt.zero_grad()
        ref_opt.zero_grad()
        out.loss.backward()
        ref.loss.backward()
        if step == 0:
            report["loss"] = (out.loss.item(), ref.loss.item())
            report["c_block_err"] = float((out.c_block - ref.c_block).abs().max())
            if mix:
                report["mix"] = (out.mix.item(), ref.mix.item())
            if crops:
                report["crops"] = (out.crops.item(), ref.crops.item())
            grads = {k: p.grad.clone() for k, p in ddp.module.named_parameters()}
            ref_grads = {k: p.grad.clone() for k, p in reference.named_parameters()}
            report["grad_rel_err"] = max(float((grads[k] - ref_grads[k]).norm() / (ref_grads[k].norm() + 1e-12))
                                         for k in grads if ref_grads[k].norm() > 0)
        opt.step()
        ref_opt.step()
    params = dict(ddp.module.named_parameters())
    report["param_rel_err"] = max(float((params[k] - p).norm() / (p.norm() + 1e-12))
                                  for k, p in reference.named_parameters())
    running = dict(ddp.module.named_buffers())
    report["buffer_rel_err"] = max(float((running[k].float() - b.float()).norm() / (b.float().norm() + 1e-12))
                                   for k, b in reference.named_buffers() if "running" in k)
    torch.save(report, os.path.join(out_dir, f"report{rank}.pt"))
    dist.destroy_process_group()


def gather_features(rank: int, world: int, port: int, out_dir: str) -> None:
    init(rank, world, port)
    from barlowtwins.data.datasets import InMemoryImages
    from barlowtwins.evaluate.features import extract_features

    g = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (13, 1, 8, 8), dtype=torch.uint8, generator=g)
    ds = InMemoryImages(images, torch.arange(13) % 3)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    feats, labels = extract_features(net, ds, image_size=8, device=torch.device("cpu"), batch_size=3)
    torch.save((feats, labels), os.path.join(out_dir, f"feats{rank}.pt"))
    dist.destroy_process_group()


def pretrain_worker(rank: int, world: int, port: int, cfg_dict: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from barlowtwins.training.config import PretrainConfig
    from barlowtwins.training.trainer import pretrain

    pretrain(PretrainConfig(**cfg_dict))


def cli_worker(rank: int, world: int, port: int, argv: list) -> None:
    """Run a ``barlowtwins`` command as one rank of a torchrun-like launch (the command starts the group)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from barlowtwins.cli import main

    assert main(list(argv)) == 0


def sync_bn_offset(rank: int, world: int, port: int, out_dir: str) -> None:
    init(rank, world, port)
    g = torch.Generator().manual_seed(0)
    x = (1000 + torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)).float()[rank * 4: rank * 4 + 4]
    x.requires_grad_()
    bn = D.SyncBatchNorm(3)
    y = bn(x)
    (y * torch.arange(1.0, 4.0).view(1, 3, 1, 1)).sum().backward()
    torch.save({"y": y.detach(), "grad": x.grad, "running_var": bn.running_var},
               os.path.join(out_dir, f"bn{rank}.pt"))
    dist.destroy_process_group()


# ---- SyncBatchNorm against plain BatchNorm on the global batch (tests/runtime/test_sync_batchnorm.py) ----------

def sync_bn_case_data(case: dict, steps: int) -> dict:
    """The float64 data of one SyncBN case, the same in every process: per step a global batch ``x`` and an
    upstream gradient ``g`` (loss = sum(y * g)), and the module's starting weight, bias and running statistics
    (not 1/0, so a skipped update or a wrong formula shows)."""
    g = torch.Generator().manual_seed(case["seed"])
    shape, c = tuple(case["shape"]), case["shape"][1]
    batches = [(case["offset"] + torch.randn(shape, generator=g, dtype=torch.float64) * (1 + torch.arange(c).view(
        [1, c] + [1] * (len(shape) - 2))), torch.randn(shape, generator=g, dtype=torch.float64)) for _ in range(steps)]
    return {"batches": batches, "weight": 1 + 0.5 * torch.randn(c, generator=g, dtype=torch.float64),
            "bias": torch.randn(c, generator=g, dtype=torch.float64),
            "running_mean": torch.randn(c, generator=g, dtype=torch.float64),
            "running_var": 0.5 + torch.rand(c, generator=g, dtype=torch.float64)}


def rank_rows(split: list, rank: int) -> slice:
    """The rows of the global batch that ``rank`` holds when the ranks hold ``split[r]`` rows each."""
    start = sum(split[:rank])
    return slice(start, start + split[rank])


def sync_bn_cases(rank: int, world: int, port: int, out_dir: str, cases: dict, steps: int) -> None:
    """Every case of ``cases`` (name -> shape, momentum, dtype, split, seed, offset) on this rank: ``steps``
    training steps of `SyncBatchNorm` on this rank's rows, then one eval forward of the last batch."""
    init(rank, world, port)
    results = {}
    for name, case in cases.items():
        data, dtype = sync_bn_case_data(case, steps), getattr(torch, case["dtype"])
        c, mine = case["shape"][1], rank_rows(case["split"], rank)
        bn = D.SyncBatchNorm(c, momentum=case["momentum"]).to(dtype)
        with torch.no_grad():
            for key in ("weight", "bias", "running_mean", "running_var"):
                getattr(bn, key).copy_(data[key])
        per_step = []
        for x, g in data["batches"]:
            xr = x[mine].to(dtype).requires_grad_()
            bn.zero_grad()
            y = bn(xr)
            (y * g[mine].to(dtype)).sum().backward()
            per_step.append({"y": y.detach(), "grad_x": xr.grad, "grad_weight": bn.weight.grad.clone(),
                             "grad_bias": bn.bias.grad.clone()})
        bn.eval()
        with torch.no_grad():
            eval_y = bn(data["batches"][-1][0][mine].to(dtype))
        results[name] = {"steps": per_step, "eval_y": eval_y, "running_mean": bn.running_mean.clone(),
                         "running_var": bn.running_var.clone(), "num_batches_tracked": bn.num_batches_tracked.clone()}
    torch.save(results, os.path.join(out_dir, f"bn_cases{rank}.pt"))
    dist.destroy_process_group()


class HostSyncOps(TorchDispatchMode):
    """Records every op dispatched under it, and separately the ones that make the host wait for the device:
    reading a value (``_local_scalar_dense``: ``.item()``, ``float()``, ``bool()``), data-dependent shapes
    (``nonzero``, ``masked_select``, ``unique``) and indexing with a boolean mask (``index``/``index_put`` with
    a bool index, which runs ``nonzero``). On CPU tensors nothing waits, but the ops are the same as on a GPU."""

    SYNCING = {"aten._local_scalar_dense", "aten.item", "aten.is_nonzero", "aten.equal", "aten.nonzero",
               "aten.nonzero_static", "aten.masked_select", "aten._unique2", "aten.unique_dim",
               "aten.unique_consecutive"}

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.syncing: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        self.ops.append(name)
        indexing = name in ("aten.index", "aten.index_put", "aten.index_put_", "aten._index_put_impl_")
        if name in self.SYNCING or (indexing and _has_bool_index(args)):
            self.syncing.append(str(func))
        return func(*args, **(kwargs or {}))


def _has_bool_index(args) -> bool:
    """True when an ``index``-family call is given a boolean (mask) index tensor."""
    indices = args[1] if len(args) > 1 else []
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or []))


def sync_bn_ops(rank: int, world: int, port: int, out_dir: str) -> None:
    """Forward + backward of a small network whose BatchNorms were converted, under `HostSyncOps`, for both
    momenta (0.1 and None, the cumulative average), 4-D and 2-D BatchNorm, two steps each."""
    init(rank, world, port)
    report = {}
    for momentum in (0.1, None):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4, momentum=momentum), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 6),
                            nn.BatchNorm1d(6, momentum=momentum))
        net = D.convert_sync_batchnorm(net, "cuda")  # what a CUDA run gets, checked here on CPU tensors
        x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(rank))
        with HostSyncOps() as mode:
            for _ in range(2):
                net.zero_grad()
                net(x).square().sum().backward()
        report[str(momentum)] = {"ops": mode.ops, "syncing": mode.syncing,
                                 "types": [f"{type(m).__module__}.{type(m).__name__}" for m in net.modules()]}
    torch.save(report, os.path.join(out_dir, f"ops{rank}.pt"))
    dist.destroy_process_group()
