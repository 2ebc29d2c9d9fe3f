"""JPEG bytes read without decoding: magic bytes, marker segments, frame header, end marker; on real JPEGs
written by PIL and on damaged, cut-short and crafted ones."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from barlowtwins.data.jpeg import JPEG_END_WITHIN, has_jpeg_end, is_jpeg, jpeg_header, jpeg_markers

SOF0, SOF2, DHT, DQT, SOS, APP0, COM = 0xC0, 0xC2, 0xC4, 0xDB, 0xDA, 0xE0, 0xFE


def jpeg(size=(36, 28), mode="RGB", **save) -> bytes:
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def test_is_jpeg_by_the_first_bytes_of_bytes_or_a_tensor():
    data = jpeg()
    assert is_jpeg(data) and is_jpeg(bytearray(data)) and is_jpeg(memoryview(data))
    assert is_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    png = io.BytesIO()
    Image.new("RGB", (4, 4)).save(png, format="PNG")
    assert not is_jpeg(png.getvalue()) and not is_jpeg(b"\xff\xd8") and not is_jpeg(b"")
    assert not is_jpeg(torch.tensor([0xFF, 0xD8, 0x00], dtype=torch.uint8))


def test_the_markers_of_a_baseline_jpeg_end_at_the_scan():
    data = jpeg()
    markers = list(jpeg_markers(data))
    kinds = [m for m, _ in markers]
    assert kinds[0] == APP0 and kinds[-1] == SOS and kinds.count(SOS) == 1  # nothing after the first scan
    assert {DQT, SOF0, DHT} <= set(kinds)
    for marker, i in markers:  # each offset is the 0xFF of its marker
        assert data[i] == 0xFF and data[i + 1] == marker


def test_the_markers_stop_at_bytes_that_are_not_a_marker():
    data = jpeg()
    dqt = next(i for m, i in jpeg_markers(data) if m == DQT)
    damaged = data[:dqt] + b"\x00\x00" + data[dqt + 2:]
    assert [m for m, _ in jpeg_markers(damaged)] == [APP0]  # the header before the damage only
    assert list(jpeg_markers(b"\xff\xd8")) == [] and list(jpeg_markers(b"")) == []


def test_fill_bytes_and_standalone_markers_are_stepped_over():
    comment = b"\xff\xfe\x00\x05abc"
    data = b"\xff\xd8" + b"\xff\xff" + b"\xff\xd0" + comment + b"\xff\xda\x00\x02" + b"\x00" * 8
    assert [m for m, _ in jpeg_markers(data)] == [COM, SOS]


@pytest.mark.parametrize("mode, components", [("RGB", 3), ("L", 1), ("CMYK", 4)])
def test_the_frame_header_gives_the_size_precision_and_components(mode, components):
    assert jpeg_header(jpeg((36, 28), mode)) == (SOF0, 8, 28, 36, components)  # height 28, width 36


def test_a_progressive_jpeg_has_its_own_frame_marker():
    assert jpeg_header(jpeg((50, 10), progressive=True)) == (SOF2, 8, 10, 50, 3)


def test_no_frame_header_or_one_cut_short_is_none():
    data = jpeg()
    sof = next(i for m, i in jpeg_markers(data) if m == SOF0)
    assert jpeg_header(data[: sof + 6]) is None  # the header cut inside its fields
    assert jpeg_header(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 10) is None  # scan data before any frame header
    assert jpeg_header(b"not a jpeg at all") is None


def test_the_end_marker_is_found_after_the_scan_and_within_the_last_bytes():
    data = jpeg((200, 300))
    assert data.endswith(b"\xff\xd9") and has_jpeg_end(data)
    assert not has_jpeg_end(data[: len(data) // 2]), "cut short in the scan data"
    assert not has_jpeg_end(data[:-2]), "only the end marker missing"
    assert has_jpeg_end(data + b"\0" * 100), "padding after the end marker is allowed"
    assert has_jpeg_end(data + b"\0" * (JPEG_END_WITHIN - 2))
    assert not has_jpeg_end(data + b"\0" * 2000), "beyond the bytes searched"
    assert has_jpeg_end(data + b"\0" * 2000, within=4096)


def test_an_end_marker_before_the_scan_does_not_count():
    data = jpeg((200, 300))
    scan = next(i for m, i in jpeg_markers(data) if m == SOS)
    cut = data[: scan + (len(data) - scan) // 2]
    thumb = b"\xff\xd8" + b"\xff\xfe\x00\x04\xff\xd9" + cut[2:]  # a comment holding FF D9, as an EXIF thumbnail's
    assert not has_jpeg_end(thumb)
    assert not has_jpeg_end(b"\xff\xd8\xff\xd9")  # no scan at all


def test_random_bytes_never_raise():
    rng = np.random.default_rng(5)
    for n in (0, 1, 3, 4, 10, 100, 1000):
        for _ in range(20):
            data = b"\xff\xd8" + rng.integers(0, 256, n, dtype=np.uint8).tobytes()
            list(jpeg_markers(data))
            header = jpeg_header(data)
            assert header is None or len(header) == 5
            assert has_jpeg_end(data) in (True, False)
