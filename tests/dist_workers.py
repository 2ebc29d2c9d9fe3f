"""Worker functions for tests/test_distributed.py (spawned processes import them from here)."""

from __future__ import annotations

import copy
import os

import torch
import torch.distributed as dist
from torch import nn

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
