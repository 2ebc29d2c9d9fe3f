"""The pretraining data path on a folder of real JPEG/PNG files and in memory: views, ranks, resume, the choice
of path and its fallback, progressive resolution, and pretraining runs (resumed; 2 processes) on a folder. Each
path's own tests are in tests/data/paths/ (unreadable files, the loader and /dev/shm: test_files.py)."""

import json

import dist_workers
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import epoch_views
from conftest import path_aug as aug
from PIL import Image

from barlowtwins.data.datasets import build_dataset, load_fashion_mnist
from barlowtwins.data.pipeline import build_pipeline, choose_data_path
from barlowtwins.errors import ConfigError
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.trainer import pretrain
from barlowtwins.weights.run_files import load_checkpoint

CPU = torch.device("cpu")


def dataset_for(kind, folder, fmnist_dir):
    return load_fashion_mnist(fmnist_dir) if kind == "memory" else build_dataset("folder", folder, "train")


@pytest.mark.parametrize("kind", ["cpu", "device", "memory"])
def test_views_are_normalised_float32_on_the_device(kind, folder, fmnist_dir):
    ds = dataset_for(kind, folder, fmnist_dir)
    pipe = build_pipeline(ds, aug(), batch_size=4, seed=0, device=CPU, data_path=kind if kind != "memory" else "auto",
                          workers=0)
    assert pipe.kind == kind and len(pipe) == len(ds) // 4
    batch, labels, idx = next(iter(pipe.epoch(0)))
    x1, x2 = pipe.views(batch, 0)
    for x in (x1, x2):
        assert x.shape == (4, 3, 24, 24) and x.dtype == torch.float32 and x.device == CPU
        assert torch.isfinite(x).all() and -3 < float(x.mean()) < 3
    assert not torch.equal(x1, x2)
    assert labels.shape == idx.shape == (4,)


@pytest.mark.parametrize("kind", ["cpu", "device", "memory"])
def test_two_ranks_draw_the_views_of_one_process_and_a_resume_draws_the_same(kind, folder, fmnist_dir):
    ds = dataset_for(kind, folder, fmnist_dir)
    path = kind if kind != "memory" else "auto"
    one = build_pipeline(ds, aug(), batch_size=8, seed=3, device=CPU, data_path=path, workers=0)
    ranks = [build_pipeline(ds, aug(), batch_size=4, seed=3, rank=r, world=2, device=CPU, data_path=path, workers=0)
             for r in range(2)]
    whole = epoch_views(one, 1)
    parts = [epoch_views(p, 1) for p in ranks]
    assert len(whole) == len(parts[0]) == len(ds) // 8
    for b, (idx, (x1, x2)) in enumerate(whole):
        assert parts[0][b][0] + parts[1][b][0] == idx
        torch.testing.assert_close(torch.cat([parts[0][b][1][0], parts[1][b][1][0]]), x1, atol=1e-5, rtol=0)
        torch.testing.assert_close(torch.cat([parts[0][b][1][1], parts[1][b][1][1]]), x2, atol=1e-5, rtol=0)
    resumed = epoch_views(one, 1, start=1)
    for (i_a, (a1, a2)), (i_b, (b1, b2)) in zip(whole[1:], resumed):
        assert i_a == i_b and torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(whole[0][1][0], epoch_views(one, 2)[0][1][0])  # another epoch, other views


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_ranks_draw_different_crops_of_the_same_image(kind, tmp_path):
    """Every file the same image: whatever differs between the ranks' views comes from their parameters."""
    d = tmp_path / "same"
    d.mkdir()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    for i in range(8):
        img.save(d / f"{i}.jpg", quality=95)
    ds = build_dataset("images", d)
    views = [build_pipeline(ds, aug(16, jitter_p=0.0, grayscale_p=0.0), batch_size=4, seed=0, rank=r, world=2,
                            device=CPU, data_path=kind, workers=0) for r in range(2)]
    x = [p.views(next(iter(p.epoch(0)))[0], 0)[0] for p in views]
    assert all(not torch.allclose(x[0][i], x[1][j], atol=0.05) for i in range(4) for j in range(4))


def test_cpu_and_device_paths_make_the_same_crops(folder):
    """Colour off: both paths crop the same boxes and resize with an antialiased bicubic filter."""
    ds = build_dataset("folder", folder, "train")
    cfg = aug(24, jitter_p=0.0, grayscale_p=0.0, blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0))
    out = {}
    for kind in ("cpu", "device"):
        pipe = build_pipeline(ds, cfg, batch_size=8, seed=1, device=CPU, data_path=kind, workers=0)
        out[kind] = epoch_views(pipe, 0)
    std = torch.tensor(cfg.std).view(1, 3, 1, 1)
    for (_, (c1, c2)), (_, (d1, d2)) in zip(out["cpu"], out["device"]):
        for c, d in ((c1, d1), (c2, d2)):
            diff = ((c - d) * std).abs()  # in [0, 1] pixel units
            assert float(diff.mean()) < 0.02 and float(diff.quantile(0.99)) < 0.12


def test_choice_of_path(folder, fmnist_dir):
    files, memory = build_dataset("folder", folder, "train"), load_fashion_mnist(fmnist_dir)
    assert choose_data_path("auto", files, CPU) == "cpu"
    assert choose_data_path("auto", files, torch.device("cuda")) == "device"
    assert choose_data_path("device", memory, CPU) == "memory"
    with pytest.raises(ConfigError, match="unknown data_path 'gpu'; choose auto, cpu, device"):
        choose_data_path("gpu", files, CPU)


def _tiny(folder, out, **kw):
    base = dict(dataset="folder", data_dir=str(folder), image_size=16, backbone="resnet18", stem="small", width=8,
                projector="32-32", epochs=2, batch_size=8, warmup_epochs=0.5, lr_weights=0.3, progress=False,
                log_every=1, out=str(out), seed=5, workers=0, checkpoint_minutes=1000, blur_p=(0.5, 0.1))
    base.update(kw)
    return base


def assert_same_weights(a_dir, b_dir, **tol):
    a, b = load_checkpoint(a_dir / "checkpoint.pth"), load_checkpoint(b_dir / "checkpoint.pth")
    assert a["step"] == b["step"]
    for k, v in a["model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["model"][k], v, msg=k, **tol)


def test_a_folder_run_resumed_mid_epoch_ends_where_the_uninterrupted_one_ends(folder, tmp_path):
    pretrain(PretrainConfig(**_tiny(folder, tmp_path / "a")))  # 16 files / 8 = 2 steps x 2 epochs
    stopped = pretrain(PretrainConfig(**_tiny(folder, tmp_path / "b", max_steps=1)))  # stops mid-epoch 0
    assert stopped["step"] == 1 and not stopped["finished"]
    assert pretrain(PretrainConfig(**_tiny(folder, tmp_path / "b")))["finished"]
    assert_same_weights(tmp_path / "a", tmp_path / "b", rtol=1e-5, atol=1e-6)
    records = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["skipped_files"] == 0 for r in records if "loss" in r)


def test_two_processes_on_a_folder_train_like_one(folder, tmp_path):
    from conftest import free_port

    pretrain(PretrainConfig(**_tiny(folder, tmp_path / "one", epochs=1)))
    mp.spawn(dist_workers.pretrain_worker, args=(2, free_port(), _tiny(folder, tmp_path / "two", epochs=1)),
             nprocs=2, join=True)
    assert load_checkpoint(tmp_path / "two" / "checkpoint.pth")["world_size"] == 2
    assert_same_weights(tmp_path / "one", tmp_path / "two", rtol=1e-4, atol=1e-5)


def test_a_torchvision_without_the_device_decoder_falls_back_to_the_cpu_path(folder, monkeypatch, capsys):
    from barlowtwins.transforms import device as dev

    def no_device(enc, device):
        raise RuntimeError("Not compiled with GPU support")

    monkeypatch.setattr(dev, "_checked", {})
    monkeypatch.setattr(dev, "_decode", no_device)
    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=4, seed=0, device=CPU, data_path="device", workers=0)
    assert pipe.kind == "cpu"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "using --data-path cpu instead" in err[0]


@pytest.mark.parametrize("kind", ["cpu", "device", "memory"])
def test_progressive_resolution_makes_the_views_of_a_run_at_that_size(kind, folder, fmnist_dir):
    """Early steps have the start size, later ones the full size; a step's views are exactly the views a
    pipeline at that fixed size makes (same draws), on every path."""
    ds = dataset_for(kind, folder, fmnist_dir)
    path = kind if kind != "memory" else "auto"
    pipe = build_pipeline(ds, aug(24), batch_size=4, seed=2, device=CPU, data_path=path, workers=0,
                          progressive=(16, 2))
    fixed16 = build_pipeline(ds, aug(16), batch_size=4, seed=2, device=CPU, data_path=path, workers=0)
    steps = len(pipe)
    assert [pipe.image_size(e * steps) for e in range(3)] == [16, 20, 24]
    batch, _, _ = next(iter(pipe.epoch(0)))
    ref, _, _ = next(iter(fixed16.epoch(0)))
    views, expected = pipe.views(batch, 0), fixed16.views(ref, 0)
    for x, y in zip(views, expected):
        assert x.shape == (4, 3, 16, 16)
        assert torch.allclose(x, y, atol=1e-5)
    late, _, _ = next(iter(pipe.epoch(2, 0)))
    assert pipe.views(late, 2 * steps)[0].shape == (4, 3, 24, 24)


def test_progressive_start_above_the_image_size_is_one_line(folder):
    ds = build_dataset("folder", folder, "train")
    with pytest.raises(ConfigError, match="progressive_start 32 is above image_size 24"):
        build_pipeline(ds, aug(24), batch_size=4, seed=0, device=CPU, data_path="cpu", workers=0,
                       progressive=(32, 2))


