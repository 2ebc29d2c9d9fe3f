"""Shared fixtures: small data the tests write themselves (no downloads)."""

from __future__ import annotations

import gzip
import os
import re
import socket
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from barlowtwins.models.backbones import create_backbone
from barlowtwins.runtime.log import enable_console
from barlowtwins.training.config import PretrainConfig
from barlowtwins.transforms.spec import augment_config
from barlowtwins.weights.save import write_run_backbone

torch.set_num_threads(2)
# --precision auto as on a CPU without native bf16 (float32), in this process and in the ones it starts: results
# must not depend on the machine the suite runs on. The bf16 tests ask for it (or mock the CPU) explicitly.
os.environ.setdefault("BARLOWTWINS_CPU_BF16", "0")
# The library's log records printed as the CLI prints them (stdout / stderr looked up per line, so capsys sees
# them): a test of a library function reads the lines a user of the command reads.
enable_console()
# The data generators the benchmarks and the tests share (benchmarks/detection_shapes.py)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write an IDX file (the MNIST format), gzipped when the name ends in .gz."""
    codes = {np.dtype(np.uint8): 0x08}
    header = struct.pack(">HBB", 0, codes[array.dtype], array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + array.tobytes()
    if str(path).endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def make_fashion_mnist(folder: Path, n_train: int = 64, n_test: int = 32, seed: int = 0) -> Path:
    """A fake Fashion-MNIST in IDX files: class k is a bright square at a class-specific position."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, size=(n, 28, 28), dtype=np.uint8)
        for i, y in enumerate(labels):
            r, c = 2 + 2 * (y % 5), 2 + 10 * (y // 5)
            images[i, r: r + 10, c: c + 10] = 220
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return folder


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 40,
                      splits=("train", "val"), seed: int = 0) -> Path:
    """root/<split>/<class>/*.jpg|png: JPEG and PNG files of simple coloured patterns."""
    rng = np.random.default_rng(seed)
    for split in splits:
        for ci, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                arr = rng.integers(0, 60, size=(size + i % 3, size, 3), dtype=np.uint8)
                arr[..., ci % 3] += 150
                ext = "jpg" if i % 2 == 0 else "png"
                Image.fromarray(arr).save(d / f"{cls}_{i}.{ext}")
    return root


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> Path:
    return make_fashion_mnist(tmp_path / "fmnist")


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    return make_image_folder(tmp_path / "images")


def tiny_config(data_dir, out, **kw) -> PretrainConfig:
    """A pretraining config that runs in a second on the fake Fashion-MNIST: 16 px, a width-8 ResNet-18."""
    base = dict(dataset="fashion-mnist", data_dir=str(data_dir), image_size=16, backbone="resnet18", stem="small",
                width=8, projector="32-32", epochs=2, batch_size=16, warmup_epochs=0.5, lr_weights=0.3,
                progress=False, log_every=2, out=str(out), seed=7)
    base.update(kw)
    return PretrainConfig(**base)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, *args, world=2):
    """Run ``fn(rank, world, port, *args)`` in ``world`` CPU processes (gloo)."""
    mp.spawn(fn, args=(world, free_port(), *args), nprocs=world, join=True)


def trained_backbone(name="resnet18", **arch) -> torch.nn.Module:
    """A backbone with non-trivial weights and BN statistics (so a wrong key or a skipped buffer shows)."""
    torch.manual_seed(0)
    net = create_backbone(name, **arch)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                v.copy_(v + 0.05 * torch.randn_like(v))
                if k.endswith("running_var"):
                    v.abs_().add_(0.5)
    return net.eval()


@pytest.fixture
def run_dir(tmp_path) -> Path:
    """A run folder as the trainer leaves it: config.yaml, backbone.pth and backbone.safetensors."""
    net = trained_backbone("resnet18", stem="small", width=8)
    cfg = {"backbone": "resnet18", "stem": "small", "width": 8, "image_size": 16, "dataset": "images"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("".join(f"{k}: {v}\n" for k, v in cfg.items()))
    write_run_backbone(net, tmp_path / "run", cfg)
    return tmp_path / "run"


def random_images(n: int = 3, size: int = 16) -> torch.Tensor:
    """(n, 3, size, size) uniform images from a fixed seed."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(1))


def reference_backbone(run_dir) -> torch.nn.Module:
    """The `run_dir` fixture's backbone rebuilt by hand from its backbone.pth (width-8 small-stem ResNet-18)."""
    net = create_backbone("resnet18", stem="small", width=8)
    net.load_state_dict(torch.load(run_dir / "backbone.pth", weights_only=True))
    return net.eval()


def epoch_views(pipe, epoch: int, start: int = 0, every_view: bool = False) -> list:
    """[(sample indices, views)] of each batch of ``pipe``'s epoch from batch ``start``: the two views, or with
    ``every_view`` also multi-crop's small crops (`DataPath.all_views`)."""
    out = []
    for b, (batch, _, idx) in enumerate(pipe.epoch(epoch, start)):
        step = epoch * len(pipe) + start + b
        out.append((idx.tolist(), (pipe.all_views if every_view else pipe.views)(batch, step)))
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """16 files (JPEG and PNG, 40 px and a little taller) under ``imgs/train/{cat,dog}``: the data paths' folder."""
    return make_image_folder(tmp_path / "imgs", per_class=8, size=40, splits=("train",))


def path_aug(size: int = 24, **kw):
    """The views the data-path tests compare: ``size`` px, a 5-px blur kernel (what small views use)."""
    return augment_config(size, blur_kernel=5, **kw)


def python_names(message: str) -> str:
    """A message as the library says it: each ``--flag-name`` as the field ``flag_name``."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


def says_both(error: BaseException, flagged: str) -> None:
    """``error`` holds ``flagged`` as the CLI prints it (flags) and, with Python's names, as its message."""
    assert flagged in getattr(error, "cli", str(error)), (getattr(error, "cli", None), flagged)
    assert python_names(flagged) in str(error), (str(error), flagged)
    assert "\n" not in str(error)

