"""The pretraining data path on a folder of real JPEG/PNG files and in memory: views, ranks, resume, the choice
of path, unreadable files, and pretraining runs (resumed; 2 processes) on a folder."""

import json
import os

import dist_workers
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import epoch_views, make_image_folder
from PIL import Image

from barlowtwins.data.datasets import build_dataset, load_fashion_mnist
from barlowtwins.data.pipeline import build_pipeline, choose_data_path
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.trainer import pretrain
from barlowtwins.transforms.spec import augment_config
from barlowtwins.weights.run_files import load_checkpoint

CPU = torch.device("cpu")


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "imgs", per_class=8, size=40, splits=("train",))  # 16 files, JPEG + PNG


def aug(size=24, **kw):
    return augment_config(size, blur_kernel=5, **kw)


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


def test_the_worker_path_with_worker_processes(folder):
    ds = build_dataset("folder", folder, "train")
    a = epoch_views(build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0), 0)
    b = epoch_views(build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=2), 0)
    for (ia, (a1, a2)), (ib, (b1, b2)) in zip(a, b):
        assert ia == ib and torch.equal(a1, b1) and torch.equal(a2, b2)


def test_choice_of_path(folder, fmnist_dir):
    files, memory = build_dataset("folder", folder, "train"), load_fashion_mnist(fmnist_dir)
    assert choose_data_path("auto", files, CPU) == "cpu"
    assert choose_data_path("auto", files, torch.device("cuda")) == "device"
    assert choose_data_path("device", memory, CPU) == "memory"
    with pytest.raises(ConfigError, match="unknown --data-path 'gpu'; choose auto, cpu, device"):
        choose_data_path("gpu", files, CPU)


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


# --------------------------------------------------------------------------------------------------------
# The device path's worker side, collate and decode fallbacks (decoder mocked where nvJPEG's behaviour counts)
# --------------------------------------------------------------------------------------------------------

def _jpeg_bytes(mode="RGB", size=(36, 28), **save):
    import io

    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.convert(mode).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def _patch_sof(data: bytes, offset: int, value: bytes) -> bytes:
    """``data`` with the bytes at ``offset`` from the frame header's marker (FF C0/C2) replaced."""
    i = min(k for k in (data.find(b"\xff\xc0"), data.find(b"\xff\xc2")) if k >= 0)
    return data[: i + offset] + value + data[i + offset + len(value):]


def test_jpegs_nvjpeg_refuses_or_over_the_pixel_cap_are_decoded_by_pil_in_the_worker(monkeypatch):
    from barlowtwins.data.jpeg import jpeg_header
    from barlowtwins.data.paths.device import device_decodable

    rgb = _jpeg_bytes()
    assert jpeg_header(rgb) == (0xC0, 8, 28, 36, 3) and device_decodable(rgb)
    assert device_decodable(_jpeg_bytes(progressive=True))  # nvJPEG decodes progressive JPEGs
    assert not device_decodable(_jpeg_bytes("CMYK"))  # 4 components
    assert not device_decodable(_patch_sof(rgb, 4, b"\x0c"))  # 12-bit samples
    assert not device_decodable(_patch_sof(rgb, 1, b"\xc3"))  # lossless
    assert not device_decodable(_patch_sof(rgb, 1, b"\xc9"))  # arithmetic-coded
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 36 * 28 - 1)  # the CPU path's cap, which nvJPEG ignores
    assert not device_decodable(rgb)


def test_bytes_collate_into_one_tensor_with_offsets_and_only_decoded_images_are_pinned(folder, monkeypatch):
    from barlowtwins.data.paths.device import DevicePath, _collate_bytes, batch_jpegs

    files = [_jpeg_bytes(), _jpeg_bytes(size=(20, 30)), _jpeg_bytes(size=(50, 10))]
    img = torch.zeros(3, 5, 6, dtype=torch.uint8)
    samples = [(True, torch.frombuffer(bytearray(files[0]), dtype=torch.uint8), 0, 3, 0, ""),
               (False, img, 1, 3, 1, ""),
               (True, torch.frombuffer(bytearray(files[1]), dtype=torch.uint8), 2, 3, 2, ""),
               (True, torch.frombuffer(bytearray(files[2]), dtype=torch.uint8), 3, 3, 3, "")]
    batch = _collate_bytes(samples)
    assert isinstance(batch["bytes"], torch.Tensor) and batch["bytes"].dtype == torch.uint8
    assert batch["bytes"].shape == (sum(map(len, files)),)
    assert batch["offsets"].tolist() == [0, len(files[0]), len(files[0]) + len(files[1]), sum(map(len, files))]
    assert [t.numpy().tobytes() for t in batch_jpegs(batch)] == files
    assert batch["images"][1] is img and batch["images"][0] is None and batch["encoded"] == [True, False, True, True]
    # the loader's pin thread calls the batch's own pin_memory: the worker-decoded image, never the bytes
    assert DevicePath.pin is True
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda t, *a, **k: pinned.append(t) or t.clone())
    from torch.utils.data._utils.pin_memory import pin_memory

    out = pin_memory(batch)
    assert len(pinned) == 1 and pinned[0] is img, "only the decoded image is pinned"
    assert out["bytes"] is batch["bytes"] and out["images"][1] is not img and torch.equal(out["images"][1], img)
    assert out["images"][0] is None and out["offsets"] is batch["offsets"]


def test_jpegs_the_device_decoder_refuses_are_decoded_by_pil_and_used(folder, monkeypatch):
    from barlowtwins.data.images import read_image
    from barlowtwins.data.paths.device import _collate_bytes
    from barlowtwins.transforms import device as dev

    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=4, seed=0, device=CPU, data_path="device", workers=0)
    refused = {_jpeg_bytes("CMYK"), _patch_sof(_jpeg_bytes(), 1, b"\xc1")}  # CMYK; extended (a 12-bit stand-in)
    good = _jpeg_bytes(size=(20, 30))
    real = dev._decode

    def nvjpeg_like(enc, device):
        if any(t.numpy().tobytes() in refused for t in enc):
            raise RuntimeError("nvjpegDecodeBatchedPhaseOne failed: unsupported JPEG")
        return real(enc, device)

    monkeypatch.setattr(dev, "_decode", nvjpeg_like)
    data = [*sorted(refused), good]
    batch = _collate_bytes([(True, torch.frombuffer(bytearray(d), dtype=torch.uint8), k, 0, k, "")
                            for k, d in enumerate(data)])
    images = pipe.decode(batch)
    for img, d in zip(images, data):
        ref = torch.from_numpy(np.asarray(read_image(d)).copy()).permute(2, 0, 1)
        assert torch.equal(img, ref) if d in refused else (img.int() - ref.int()).abs().float().mean() < 1
    assert pipe.skipped == {}  # decoded, not skipped


def test_an_out_of_memory_decode_stops_the_run(folder, monkeypatch):
    from barlowtwins.data.paths.device import _collate_bytes
    from barlowtwins.transforms import device as dev

    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=4, seed=0, device=CPU, data_path="device", workers=0)

    def oom(enc, device):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")

    monkeypatch.setattr(dev, "_decode", oom)
    batch = _collate_bytes([(True, torch.frombuffer(bytearray(_jpeg_bytes()), dtype=torch.uint8), 0, 0, 0, "")])
    with pytest.raises(ConfigError, match="out of memory"):
        pipe.decode(batch)
    assert pipe.skipped == {}


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


def test_the_cpu_path_states_its_batch_bytes(folder):
    ds = build_dataset("folder", folder, "train")
    pipe = build_pipeline(ds, aug(), batch_size=8, seed=0, device=CPU, data_path="cpu", workers=0)
    assert pipe.batch_bytes() == 2 * 8 * aug().image_size ** 2 * 3


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
    with pytest.raises(ConfigError, match="progressive-start 32 is above --image-size 24"):
        build_pipeline(ds, aug(24), batch_size=4, seed=0, device=CPU, data_path="cpu", workers=0,
                       progressive=(32, 2))


def _truncated(data: bytes) -> bytes:
    """JPEG bytes cut in the middle of the scan data (a copy or download that stopped)."""
    from barlowtwins.data.jpeg import jpeg_markers

    scan = next(i for marker, i in jpeg_markers(data) if marker == 0xDA)
    return data[: scan + (len(data) - scan) // 2]


def test_a_truncated_jpeg_goes_to_pil_in_the_worker_not_to_the_device_decoder(tmp_path):
    """nvJPEG may return garbage for a JPEG cut short without an error: without its end-of-image marker a file
    is decoded by PIL in the worker (which decodes it as the cpu path does, or reports it)."""
    from barlowtwins.data.jpeg import has_jpeg_end
    from barlowtwins.data.paths.device import _Bytes, device_decodable

    big = _jpeg_bytes(size=(200, 300))
    cut = _truncated(big)
    assert has_jpeg_end(big) and device_decodable(big)
    assert not has_jpeg_end(cut) and not device_decodable(cut)
    assert has_jpeg_end(big + b"\0" * 100), "padding after the end-of-image marker is allowed"
    assert not has_jpeg_end(big + b"\0" * 2000), "beyond the bytes searched: decoded the careful way"
    # an end-of-image marker before the scan (an embedded thumbnail's) does not count
    thumb = b"\xff\xd8" + b"\xff\xfe\x00\x04\xff\xd9" + cut[2:]
    assert not has_jpeg_end(thumb)
    (tmp_path / "cut.jpg").write_bytes(cut)
    (tmp_path / "big.jpg").write_bytes(big)
    samples = _Bytes([str(tmp_path / "cut.jpg"), str(tmp_path / "big.jpg")], aug(), 0, False)
    # PIL in the worker reports the cut file as the cpu path does, and the next readable file stands in
    encoded, data, index, _, _, note, source = samples[(0, 0, 0)]
    assert (index, source) == (0, 1) and note.startswith(str(tmp_path / "cut.jpg") + "\t"), note
    only = _Bytes([str(tmp_path / "cut.jpg")] * 2, aug(), 0, False)
    with pytest.raises(DataError):
        only[(0, 0, 0)]
    encoded, data, *_ = samples[(1, 0, 1)]
    assert encoded is True and data.dtype == torch.uint8 and data.dim() == 1  # bytes for the device decoder


@pytest.mark.parametrize("workers", [0, 1])
def test_a_file_the_device_decoder_refused_is_decoded_by_pil_in_the_workers_from_then_on(tmp_path, monkeypatch,
                                                                                      capsys, workers):
    """The refusal is remembered in shared memory, so the loader workers (forked before it) read it: the second
    epoch hands the file over decoded, the device decoder never sees it again, and one warning names it."""
    from barlowtwins.transforms import device as dev

    root = tmp_path / "train" / "a"
    root.mkdir(parents=True)
    for k in range(8):
        (root / f"{k}.jpg").write_bytes(_jpeg_bytes(size=(20 + k, 30)))
    odd = _jpeg_bytes(size=(33, 27))
    (root / "odd.jpg").write_bytes(odd)
    real, seen = dev._decode, []

    def refuses_odd(enc, device):
        seen.append(sum(t.numpy().tobytes() == odd for t in enc))
        if seen[-1]:
            raise RuntimeError("nvjpegDecodeBatchedPhaseOne failed: unsupported JPEG")
        return real(enc, device)

    ds = build_dataset("folder", tmp_path, "train")
    pipe = build_pipeline(ds, aug(), batch_size=9, seed=0, device=CPU, data_path="device", workers=workers)
    monkeypatch.setattr(dev, "_decode", refuses_odd)
    for epoch in (0, 1):
        for batch, _, _ in pipe.epoch(epoch):
            images = pipe.decode(batch)
            assert len(images) == 9
            k = batch["index"].tolist().index(ds.files.index(str(root / "odd.jpg")))
            assert batch["encoded"][k] is (epoch == 0), "the workers decode it themselves once it was refused"
            assert images[k].shape == (3, 27, 33)  # 33 wide, 27 high
    pipe.close()
    assert sum(seen[:2]) == 2 and sum(seen[2:]) == 0, seen  # refused once: in the batch, then alone
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refused 1 file(s)" in err[0] and "odd.jpg" in err[0], err
    assert pipe.skipped == {} and pipe.refused_names == [str(root / "odd.jpg")]


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
