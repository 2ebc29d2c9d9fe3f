"""The ``device`` data path (`data.paths.device`): the JPEGs sent to the device decoder (by their header), the
batch of bytes with offsets and what is pinned, and the decode fallbacks: PIL for what the device decoder refuses
(remembered for the workers), a truncated JPEG, an out-of-memory decode (decoder mocked where nvJPEG's behaviour
counts)."""

import numpy as np
import pytest
import torch
from conftest import path_aug as aug
from PIL import Image

from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.errors import ConfigError, DataError

CPU = torch.device("cpu")


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


