"""Worker functions for the trainer's multi-rank tests (spawned processes import them from here)."""

from __future__ import annotations

import os

import torch


def skewed_clock_pretrain(rank: int, world: int, port: int, cfg_dict: dict, fast_rank: int, out_dir: str) -> None:
    """Pretrain as one rank of ``world`` (gloo), the clock the trainer reads running 10^6 times faster on
    ``fast_rank`` (so that rank finds a checkpoint due at every chance); the steps at which this rank wrote (or
    joined) a checkpoint go to ``<out_dir>/saved<rank>.pt``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from barlowtwins.training import trainer as T
    from barlowtwins.training.config import PretrainConfig

    if rank == fast_rank:
        real, origin = T.clock, T.clock()
        T.clock = lambda: origin + (real() - origin) * 1e6
    saved, save = [], T.Trainer.save_checkpoint

    def recorded(self, reason: str) -> None:
        save(self, reason)
        saved.append(self.step)

    T.Trainer.save_checkpoint = recorded
    T.pretrain(PretrainConfig(**cfg_dict))
    path = os.path.join(out_dir, f"saved{rank}.pt")
    torch.save(torch.load(path) + saved if os.path.exists(path) else saved, path)
