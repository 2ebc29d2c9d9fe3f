"""What the two data paths for files share (`data.paths.files`): unreadable files replaced by the next readable
one and named once, a folder where nothing decodes and ``--strict-data`` refused before any batch, one loader
whose workers outlive an epoch, and the loader's prefetch fitted to the shared memory."""

import os

import numpy as np
import pytest
import torch
from conftest import epoch_views
from conftest import path_aug as aug

from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.paths.files import MAX_REPLACEMENTS, _FileSamples
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.errors import DataError
from barlowtwins.transforms.spec import augment_config

CPU = torch.device("cpu")


def corrupt(folder):
    bad = folder / "train" / "cat" / "cat_0.jpg"  # a real file of the folder, garbled after its header
    data = bad.read_bytes()
    bad.write_bytes(data[:200] + bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8)))
    return bad


@pytest.mark.parametrize("kind", ["cpu", "device"])
def test_an_unreadable_file_is_skipped_named_once_and_counted(kind, folder, capsys):
    bad = corrupt(folder)
    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path=kind, workers=1 if kind == "cpu"
                          else 0)
    for _ in range(2):
        for _, (x1, x2) in epoch_views(pipe, 0):
            assert torch.isfinite(x1).all() and x1.shape[0] == 8
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "skipping unreadable image" in ln]
    assert len(lines) == 1 and str(bad) in lines[0] and "--strict-data" in lines[0], err
    assert pipe.metrics() == {"skipped_files": 1}


def test_a_folder_where_nothing_decodes_stops_before_any_work(tmp_path):
    d = tmp_path / "junk"
    d.mkdir()
    for i in range(4):
        (d / f"{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.raises(DataError, match="none of the 4 image files in .*junk can be decoded"):
        build_pipeline(build_dataset("images", d), aug(), batch_size=2, seed=0, device=CPU, workers=0)


def test_strict_data_refuses_before_any_batch(folder):
    bad = corrupt(folder)
    ds = build_dataset("folder", folder, "train")
    with pytest.raises(DataError, match=f"1 of 16 image files cannot be decoded \\({bad}\\)"):
        build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0, strict=True)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_new_epoch_ends_the_previous_one_and_close_releases_the_workers(folder, workers):
    """The loader (and its workers) outlive an epoch: an epoch abandoned half-way, a later one started with a
    `start`, and the loader closed and started again all give exactly a fresh pipeline's batches; a generator
    of a superseded epoch raises instead of handing out another epoch's batches."""
    def fresh():
        return build_pipeline(build_dataset("images", str(folder)), aug(), batch_size=4, seed=2, data_path="cpu",
                              workers=workers)

    pipe = fresh()
    old = pipe.epoch(0)
    next(old)  # epoch 0 abandoned after one batch
    got = [(idx.tolist(), int(b["step"][0])) for b, _, idx in pipe.epoch(1, start=2)]
    want = [(idx.tolist(), int(b["step"][0])) for b, _, idx in fresh().epoch(1, start=2)]
    assert got == want and [s for _, s in got] == [6, 7]
    with pytest.raises(RuntimeError, match="later epoch"):
        next(old)
    pipe.close()
    again = epoch_views(pipe, 0)
    ref = epoch_views(fresh(), 0)
    assert [i for i, _ in again] == [i for i, _ in ref]
    for (_, a), (_, b) in zip(again, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    pipe.close()


def test_the_loader_prefetch_fits_the_shared_memory(tmp_path, monkeypatch, capsys):
    """Docker's default /dev/shm (64 MB) cannot hold 10 workers x 4 batches of 224-px views: fewer batches ahead
    with a warning, or one line naming the fix when not even one batch per worker fits (not a bus error mid-run)."""
    import collections

    from barlowtwins.data.paths import files as P

    usage = collections.namedtuple("usage", "total used free")
    batch = 2 * 128 * 224 * 224 * 3  # the cpu path's two uint8 views of a batch of 128: 38.5 MB
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: usage(2**40, 0, 2**40))
    assert P.prefetch_for_shm(batch, 10) == P.PREFETCH and P.prefetch_for_shm(batch, 0) is None
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: usage(2**30, 0, 200 * 2**20))
    assert P.prefetch_for_shm(batch, 2) == 2
    assert "docker run --shm-size" in capsys.readouterr().err
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: usage(2**26, 0, 64 * 2**20))
    with pytest.raises(DataError, match=r"/dev/shm has 64 MB free, but 10 loader workers need") as e:
        P.prefetch_for_shm(batch, 10)
    assert "\n" not in str(e.value)


def test_the_shared_memory_check_counts_every_local_rank_and_the_device_paths_bytes(folder, monkeypatch, capsys):
    """All ranks of a node hand their batches over in the same /dev/shm; a path's batch_bytes is its own rank's
    batch (batch_size is already per rank); the device path's is estimated from the files' sizes."""
    import collections

    from barlowtwins.data.paths import files as P

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(P.shutil, "disk_usage", lambda path: usage(2**30, 0, 100 * 2**20))
    batch = 10 * 2**20
    assert P.prefetch_for_shm(batch, 2, local_ranks=1) == P.PREFETCH
    assert P.prefetch_for_shm(batch, 2, local_ranks=2) == 2  # 4 workers share 80 MB usable: 2 batches each
    assert "2 loader workers x 2 ranks on this node" in capsys.readouterr().err
    with pytest.raises(DataError, match="x 8 ranks on this node need 160 MB"):
        P.prefetch_for_shm(batch, 2, local_ranks=8)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # torchrun's: the default
    with pytest.raises(DataError, match="x 8 ranks"):
        P.prefetch_for_shm(batch, 2)
    ds = build_dataset("folder", folder, "train")
    cpu = build_pipeline(ds, aug(), batch_size=4, seed=0, rank=1, world=2, device=CPU, data_path="cpu", workers=0)
    assert cpu.batch_bytes() == 2 * 4 * aug().image_size ** 2 * 3, "per rank, not divided again"
    dev = build_pipeline(ds, aug(), batch_size=4, seed=0, device=CPU, data_path="device", workers=0)
    sizes = [os.path.getsize(f) for f in ds.files]
    assert dev.batch_bytes() == int(np.mean(sizes) * 4)




def _reader(bad: set[int]):
    def read(j):
        if j in bad:
            err = DataError(f"corrupt image {j}")
            err.reason = f"cannot be decoded ({j})"
            raise err
        return f"image {j}"
    return read


def test_an_unreadable_file_is_replaced_by_the_next_readable_one_with_a_note():
    samples = _FileSamples([f"f{i}.jpg" for i in range(6)], augment_config(16), seed=0, strict=False)
    assert samples.read_first_readable_at(1, _reader(set())) == ("image 1", "")
    # the note names the first file that failed, with its reason, tab-separated
    assert samples.read_first_readable_at(1, _reader({1, 2})) == ("image 3", "f1.jpg\tcannot be decoded (1)")
    assert samples.read_first_readable_at(5, _reader({5}))[0] == "image 0"  # wraps around the list
    assert samples.read_first_readable(2, lambda path: path.upper()) == ("F2.JPG", "")


def test_strict_data_raises_at_the_first_unreadable_file():
    samples = _FileSamples([f"f{i}.jpg" for i in range(6)], augment_config(16), seed=0, strict=True)
    with pytest.raises(DataError, match="corrupt image 1"):
        samples.read_first_readable_at(1, _reader({1}))


def test_too_many_unreadable_files_in_a_row_stop_with_one_line():
    n = MAX_REPLACEMENTS + 5
    samples = _FileSamples([f"f{i}.jpg" for i in range(n)], augment_config(16), seed=0, strict=False)
    with pytest.raises(DataError, match=f"{MAX_REPLACEMENTS} image files in a row from f0.jpg cannot be decoded"):
        samples.read_first_readable_at(0, _reader(set(range(MAX_REPLACEMENTS))))
    # one more readable file within reach and it is used
    assert samples.read_first_readable_at(0, _reader(set(range(MAX_REPLACEMENTS - 1))))[0] == \
        f"image {MAX_REPLACEMENTS - 1}"


def test_the_batches_of_an_epoch_carry_their_step_and_labels(folder):
    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=4, seed=0, rank=1, world=2, device=CPU, data_path="cpu", workers=0)
    assert len(pipe) == 2  # 16 files, global batches of 8
    for b, (batch, labels, idx) in enumerate(pipe.epoch(3)):
        assert batch["step"].tolist() == [3 * 2 + b] * 4
        assert labels.tolist() == ds.labels[idx].tolist()
    assert [int(b["step"][0]) for b, _, _ in pipe.epoch(3, start=1)] == [7]
