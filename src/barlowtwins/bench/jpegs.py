"""Synthetic JPEG folders for the benchmarks: photo-like images of mixed sizes, made once per seed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from barlowtwins.runtime.files import atomic_write


def make_jpeg_folder(folder: str | os.PathLike, count: int, size_range: tuple[int, int] = (350, 500),
                     quality: int = 90, seed: int = 0) -> Path:
    """``count`` synthetic photographs-like JPEGs (smooth colour fields plus grain) with sides drawn uniformly
    from ``size_range``; files already there are kept, so a second run reuses them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = (int(v) for v in rng.integers(size_range[0], size_range[1] + 1, size=2))
        path = folder / f"img_{i:06d}.jpg"
        if path.exists():
            continue
        coarse = rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3), dtype=np.uint8)
        smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
        grain = rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
        image = Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8))
        # atomic: a file that exists is kept by the next run, so a half-written one must never exist
        atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=quality))
    return folder
