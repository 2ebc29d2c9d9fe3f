"""The ``cpu`` data path (`data.paths.cpu`): both views made whole with PIL in the loader workers, the same with
or without worker processes, the batch bytes it hands over, and the worker side's one decode per file."""

import pytest
import torch
from conftest import epoch_views
from conftest import path_aug as aug

from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.pipeline import build_pipeline

CPU = torch.device("cpu")


def test_the_worker_path_with_worker_processes(folder):
    ds = build_dataset("folder", folder, "train")
    a = epoch_views(build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0), 0)
    b = epoch_views(build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=2), 0)
    for (ia, (a1, a2)), (ib, (b1, b2)) in zip(a, b):
        assert ia == ib and torch.equal(a1, b1) and torch.equal(a2, b2)


def test_the_cpu_path_states_its_batch_bytes(folder):
    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0)
    assert pipe.batch_bytes() == 2 * 8 * aug().image_size ** 2 * 3




def test_a_batch_used_at_another_step_is_refused(folder):
    pipe = build_pipeline(build_dataset("folder", folder, "train"), aug(), batch_size=8, seed=0, device=CPU,
                          data_path="cpu", workers=0)
    batch, _, _ = next(iter(pipe.epoch(0)))
    assert [tuple(v.shape) for v in batch["views"]] == [(8, 24, 24, 3)] * 2  # whole uint8 views from the workers
    with pytest.raises(RuntimeError, match="batch of step 0 used at step 1"):
        pipe.views(batch, 1)


def test_the_keys_of_one_worker_batch_belong_to_one_step(folder):
    from barlowtwins.data.paths.cpu import _PilViews

    files = build_dataset("folder", folder, "train").files
    samples = _PilViews(files, aug(), seed=0, strict=False)
    (v1, v2), index, step, note = samples[(3, 5, 3)]
    assert v1.shape == v2.shape == (24, 24, 3) and v1.dtype == torch.uint8 and (index, step, note) == (3, 5, "")
    with pytest.raises(ValueError, match="one step"):
        samples.__getitems__([(0, 1, 0), (1, 2, 1)])
    # a sample's views depend on its step and position, not on the batch it comes in
    alone = samples.__getitems__([(2, 4, 1)])[0][0]
    together = samples.__getitems__([(7, 4, 0), (2, 4, 1)])[1][0]
    assert all(torch.equal(a, b) for a, b in zip(alone, together))


def test_a_file_is_opened_once_and_its_views_drawn_from_its_header_size(tmp_path):
    """The parameters are drawn from the size in the header, before the decode, which is drafted (decoded at a
    1/2^k scale) when every crop is at least twice its output."""
    from PIL import Image

    from barlowtwins.data.paths.cpu import decode_for_views
    from barlowtwins.transforms.params import sample_uniforms, sample_views_from

    Image.new("RGB", (400, 240), (10, 200, 30)).save(tmp_path / "a.jpg", quality=95)
    cfg = aug(16, crop_scale=(0.9, 1.0))  # crops of most of the image, 16 px out: far more pixels than needed
    draws = sample_uniforms(cfg, 0, 0, [0])
    asked = []

    def params(width, height):
        asked.append((width, height))
        return sample_views_from(cfg, draws, 0, height, width)

    img, full, p1, p2 = decode_for_views(str(tmp_path / "a.jpg"), params, 16)
    assert asked == [(400, 240)] and full == (400, 240)
    assert (p1["box"], p2["box"]) == tuple(p["box"] for p in sample_views_from(cfg, draws, 0, 240, 400))
    assert img.mode == "RGB" and img.size[0] < 400 and img.size[0] / img.size[1] == pytest.approx(400 / 240, 0.02)
