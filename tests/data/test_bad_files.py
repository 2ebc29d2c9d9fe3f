"""`data.bad_files`: unreadable files dropped from evaluation batches (never replaced, never relabelled), counted
once, listed in one line; `refuse_unreadable` names them before any work."""

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from barlowtwins.data.bad_files import (
    ReadableBatches,
    collect_bad_files,
    note_unreadable,
    refuse_unreadable,
    summary_line,
)
from barlowtwins.data.datasets import ImageFiles, labelled_folder
from barlowtwins.errors import DataError
from barlowtwins.evaluate.features import eval_transform, extract_features, extract_features_kept


@pytest.fixture
def bad_split(tmp_path):
    """train/<class>/ of real JPEGs and PNGs plus a truncated JPEG (class cat) and random bytes (class dog)."""
    root = make_image_folder(tmp_path / "imgs", per_class=4, splits=("train",))
    data = (root / "train" / "cat" / "cat_0.jpg").read_bytes()
    (root / "train" / "cat" / "cat_9_cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "train" / "dog" / "dog_9_noise.jpg").write_bytes(
        np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return labelled_folder(root, "train")


@pytest.mark.parametrize("workers", [0, 1])
def test_bad_samples_are_dropped_and_the_rest_stay_aligned(bad_split, workers):
    bad_idx = {i for i, f in enumerate(bad_split.files) if "_9_" in f}
    stream = ReadableBatches(bad_split, 3, transform=eval_transform(16), workers=workers)
    with collect_bad_files() as bad:
        batches = list(stream)
    idx = torch.cat([b[2] for b in batches]).tolist()
    labels = torch.cat([b[1] for b in batches])
    assert idx == [i for i in range(len(bad_split)) if i not in bad_idx]  # in order, the bad ones left out
    assert labels.tolist() == bad_split.labels[idx].tolist()
    assert {s.index for s in stream.skipped} == bad_idx
    assert sorted(bad.files.values()) == ["not an image", "truncated"]


def test_features_of_a_folder_with_bad_files_equal_those_of_its_good_files(bad_split):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    kw = dict(image_size=16, device=torch.device("cpu"), batch_size=4, workers=0)
    with collect_bad_files() as bad:
        f, y, kept = extract_features_kept(net, bad_split, **kw)
    good = [i for i, p in enumerate(bad_split.files) if "_9_" not in p]
    ref, yref = extract_features(net, bad_split.subset(good), **kw)
    assert kept.tolist() == good and len(bad) == 2
    assert torch.equal(y, yref) and torch.allclose(f, ref)


def test_a_folder_of_only_bad_files_is_one_line(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    ds = ImageFiles([str(tmp_path / "a.jpg")], [0])
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    with collect_bad_files(), pytest.raises(DataError) as e:
        extract_features(net, ds, image_size=8, device=torch.device("cpu"), workers=0)
    assert "none of the 1 image files" in str(e.value) and len(str(e.value).splitlines()) == 1


def test_summary_names_each_file_once():
    line = summary_line([{"file": "a.jpg", "reason": "truncated"}, {"file": "b.jpg", "reason": "not an image"}])
    assert line.startswith("skipped 2 unreadable files: a.jpg (truncated), b.jpg (not an image)")
    assert "\n" not in line and summary_line([]) == ""
    with collect_bad_files() as bad:
        for _ in range(3):  # met in three batches or epochs: counted once
            note_unreadable("a.jpg", "truncated")
    assert len(bad) == 1


def test_without_a_collector_each_file_is_warned_once(capsys):
    note_unreadable("/data/zz_once.jpg", "truncated")
    note_unreadable("/data/zz_once.jpg", "truncated")
    assert capsys.readouterr().err.count("zz_once.jpg") == 1


def test_refuse_unreadable_names_the_files_in_one_line(bad_split):
    with pytest.raises(DataError) as e:
        refuse_unreadable(bad_split.files)
    text = str(e.value)
    assert len(text.splitlines()) == 1 and "cat_9_cut.jpg (truncated)" in text and "dog_9_noise.jpg" in text
    assert "--strict-data" in text
    refuse_unreadable([f for f in bad_split.files if "_9_" not in f])  # all good: nothing raised


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def _two_rank_features(rank, world, port, root, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    with collect_bad_files() as bad:
        f, y, kept = extract_features_kept(_net(), labelled_folder(root, "train"), image_size=16,
                                           device=torch.device("cpu"), batch_size=2, workers=0)
    torch.save((f, y, kept, sorted(bad.files)), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_ranks_skip_the_same_files_and_match_one_process(bad_split, tmp_path):
    from conftest import spawn

    root = str(tmp_path / "imgs")
    spawn(_two_rank_features, root, str(tmp_path))
    ref, yref, kref = extract_features_kept(_net(), bad_split, image_size=16, device=torch.device("cpu"),
                                            batch_size=2, workers=0)
    for rank in (0, 1):
        f, y, kept, bad = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(kept, kref) and torch.equal(y, yref) and len(bad) == 2  # every rank counts both
        torch.testing.assert_close(f, ref)


def _lockstep_counts(rank, world, port, root, out_dir):
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    ds = labelled_folder(root, "train")
    first_bad = next(i for i, f in enumerate(ds.files) if "_9_" in f)
    ds = ds.subset([first_bad] + [i for i, f in enumerate(ds.files) if "_9_" not in f][:3])  # rank 0 reads it
    counts = {}
    for lockstep in (None, torch.device("cpu")):
        stream = ReadableBatches(ds, 1, rank=rank, world_size=world, transform=eval_transform(16), workers=0,
                                 lockstep_device=lockstep)
        counts[str(lockstep)] = sum(1 for _ in stream)
    torch.save(counts, os.path.join(out_dir, f"counts{rank}.pt"))
    dist.destroy_process_group()


def test_training_ranks_take_the_same_number_of_steps(bad_split, tmp_path):
    from conftest import spawn

    spawn(_lockstep_counts, str(tmp_path / "imgs"), str(tmp_path))
    c0, c1 = torch.load(tmp_path / "counts0.pt"), torch.load(tmp_path / "counts1.pt")
    assert (c0["None"], c1["None"]) == (1, 2)  # a batch of only an unreadable file: one step fewer on rank 0
    assert c0["cpu"] == c1["cpu"] == 1
