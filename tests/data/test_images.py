"""Reading image files: every failure is a one-line DataError naming the file; fuzzed bytes and damaged JPEGs."""

import multiprocessing
import signal

import numpy as np
import pytest
from PIL import Image

from barlowtwins.data.datasets import image_folder
from barlowtwins.data.images import PIL_FORMATS, first_decodable, read_image, scan_images
from barlowtwins.errors import DataError


def _jpeg(seed: int = 0) -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(
        buf, format="JPEG", quality=90)
    return buf.getvalue()


def _image_or_data_error(data: bytes) -> None:
    try:
        img = read_image(data, name="fuzz.jpg")
    except DataError as e:
        assert "fuzz.jpg" in str(e) and "\n" not in str(e)
        return
    assert img.mode == "RGB" and img.size[0] > 0 and img.size[1] > 0


def test_corrupt_image_names_the_file(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.jpg.*remove or replace"):
        read_image(d / "broken.jpg")
    ds = image_folder(d)  # listing does not decode
    with pytest.raises(DataError, match="broken.jpg.*remove or replace"):
        ds[0]
    with pytest.raises(DataError, match="none of the 1 image files in here can be decoded"):
        first_decodable(ds.files, "here")
    Image.new("RGB", (8, 8)).save(d / "ok.png")
    assert first_decodable(image_folder(d).files, "here") == 1  # stops at the first readable file


def test_unreadable_files_of_every_kind_are_one_line_data_errors(tmp_path, monkeypatch):
    """Truncated JPEG, garbage, an empty file, a format we refuse, and a decompression bomb."""
    arr = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "good.jpg", quality=90)
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "script.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    Image.new("RGB", (300, 300)).save(tmp_path / "big.png")
    for name in ("truncated.jpg", "garbage.png", "empty.jpg", "script.eps"):
        with pytest.raises(DataError, match=f"{name}.*remove or replace the file"):
            read_image(tmp_path / name)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 300 x 300 is over twice the limit
    with pytest.raises(DataError, match="big.png .*DecompressionBombError"):
        read_image(tmp_path / "big.png")
    monkeypatch.undo()
    assert read_image(tmp_path / "good.jpg").size == (64, 64)
    bad = scan_images([str(tmp_path / n) for n in ("good.jpg", "truncated.jpg", "big.png", "empty.jpg")])
    assert [p.rsplit("/", 1)[1] for p, _ in bad] == ["truncated.jpg", "empty.jpg"]


def test_reader_fuzz_random_bytes_and_damaged_jpegs():
    """Whatever the bytes, the reader returns an RGB image or raises our one-line DataError (never anything else)."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    good = _jpeg()

    @hypothesis.settings(max_examples=150, deadline=None, derandomize=True)
    @hypothesis.given(st.one_of(
        st.binary(max_size=600),
        st.binary(max_size=300).map(lambda b: b"\xff\xd8\xff\xe0" + b),  # a JPEG header, then noise
        st.integers(0, len(good)).map(lambda n: good[:n]),  # truncated anywhere
        st.tuples(st.integers(0, len(good) - 1), st.integers(0, 255)).map(  # one byte changed anywhere
            lambda t: good[: t[0]] + bytes([t[1]]) + good[t[0] + 1:]),
        st.binary(max_size=200).map(lambda b: b"\x89PNG\r\n\x1a\n" + b),
    ))
    def check(data):
        _image_or_data_error(data)

    check()


def test_an_error_of_the_draft_callback_is_not_taken_for_a_bad_file(tmp_path):
    """read_image's callable draft (the cpu path draws a view's parameters there) runs outside the handlers that
    turn decoder errors into 'unreadable image': a bug in it surfaces as itself."""
    from PIL import Image

    from barlowtwins.data.images import read_image

    path = tmp_path / "a.jpg"
    Image.new("RGB", (64, 48), (200, 10, 10)).save(path)
    seen = []
    img = read_image(str(path), draft=lambda w, h: seen.append((w, h)) or (16, 12))
    assert seen == [(64, 48)] and img.size == (16, 12)  # 1/4-scale decode from one open

    def broken(w, h):
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError, match="a bug"):
        read_image(str(path), draft=broken)


@pytest.mark.timeout(120)
def test_parallel_scan_ends_under_the_trainers_stop_signal_handler(tmp_path):
    # The trainer installs a SIGTERM handler that records a stop instead of exiting; forked scan workers inherit
    # it, so a pool torn down with SIGTERM (Pool.__exit__) could wait for them forever (an occasional hang of
    # --strict-data, a race this test does not force every time). Scans under such a handler end, with the
    # workers shut down, and find the one bad file.
    for i in range(70):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(tmp_path / f"{i:03d}.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    files = sorted(str(p) for p in tmp_path.iterdir())
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        for _ in range(5):
            bad = scan_images(files, workers=2)
            assert [f for f, _ in bad] == [str(tmp_path / "bad.jpg")]
            assert not multiprocessing.active_children()
    finally:
        signal.signal(signal.SIGTERM, previous)


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n"


def watch_ghostscript(monkeypatch) -> list:
    """Records any use of PIL's EPS plugin (it runs Ghostscript to decode) and refuses to start any program."""
    import subprocess

    from PIL import EpsImagePlugin

    used = []
    original = EpsImagePlugin.EpsImageFile._open

    def eps_open(self):
        used.append("EpsImagePlugin")
        return original(self)

    def popen(*args, **kw):
        used.append(f"subprocess.Popen {args[:1]}")
        raise AssertionError("a program was started to read an image")
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", eps_open)
    monkeypatch.setattr(subprocess, "Popen", popen)
    return used


def test_read_image_opens_only_the_formats_of_its_allow_list(tmp_path, monkeypatch):
    used = watch_ghostscript(monkeypatch)
    (tmp_path / "photo.jpg").write_bytes(EPS)  # an EPS file under an image's name
    with pytest.raises(DataError, match="photo.jpg .*remove or replace"):
        read_image(tmp_path / "photo.jpg")
    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="a.png"):
        read_image(tmp_path / "a.png", formats=("JPEG",))  # a narrower list: PNG refused
    assert read_image(tmp_path / "a.png", formats=("PNG",)).size == (8, 6)
    with pytest.raises(ValueError, match="EPS"):
        read_image(tmp_path / "a.png", formats=("PNG", "EPS"))  # never widened past PIL_FORMATS
    assert not {"EPS", "PS", "PDF"} & set(PIL_FORMATS) and not used


def test_a_file_deleted_after_the_listing_is_reported_missing(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "b.jpg")
    files = [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    (tmp_path / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"b.jpg is missing \(deleted\?\)") as e:
        read_image(files[1])
    assert "decode" not in str(e.value) and "corrupt" not in str(e.value) and e.value.reason == "missing (deleted?)"
    (bad, reason), = scan_images(files)
    assert bad == files[1] and "missing (deleted?)" in reason and "corrupt" not in reason


def _flaky_open(monkeypatch, failures: int, err: int | None = None):
    """``open`` in the image reader fails ``failures`` times with an I/O error, then opens; sleeps are recorded."""
    import builtins
    import errno

    from barlowtwins.data import images

    calls, sleeps = [], []

    def flaky(path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= failures:
            raise OSError(err or errno.EIO, "Input/output error", str(path))
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(images, "open", flaky, raising=False)
    monkeypatch.setattr("time.sleep", sleeps.append)
    return calls, sleeps


def test_a_transient_io_error_is_tried_again_not_taken_for_a_corrupt_file(tmp_path, monkeypatch):
    Image.new("RGB", (8, 6), (10, 20, 30)).save(tmp_path / "a.png")
    calls, sleeps = _flaky_open(monkeypatch, failures=2)
    img = read_image(tmp_path / "a.png")
    assert img.size == (8, 6) and img.getpixel((0, 0)) == (10, 20, 30)
    assert len(calls) == 3 and len(sleeps) == 2 and 0 < sleeps[0] < sleeps[1] < 1  # a short, growing backoff

    # An I/O error in the middle of the decode (after the header) is tried again too.
    import errno
    import io

    from barlowtwins.data import images

    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(tmp_path / "b.png")
    failed = []

    class FailsOnce(io.FileIO):
        def readinto(self, b):
            if self.tell() > 4000 and not failed:
                failed.append(self.tell())
                raise OSError(errno.EIO, "Input/output error")
            return super().readinto(b)

    monkeypatch.setattr(images, "open", lambda path, mode: io.BufferedReader(FailsOnce(path, "r")), raising=False)
    with Image.open(tmp_path / "b.png") as im:  # PIL's own open, not the flaky one
        expected = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(np.asarray(read_image(tmp_path / "b.png")), expected)
    assert failed  # the error did happen, during the decode


def test_a_lasting_io_error_ends_in_one_line_and_decode_errors_are_not_tried_again(tmp_path, monkeypatch):
    import errno

    from barlowtwins.data.images import IO_TRIES, read_file_bytes

    Image.new("RGB", (8, 6)).save(tmp_path / "a.png")
    calls, _ = _flaky_open(monkeypatch, failures=100, err=errno.ESTALE)
    with pytest.raises(DataError, match=r"cannot read image .*a.png \(I/O error, 4 tries.*network file system") as e:
        read_image(tmp_path / "a.png")
    assert "\n" not in str(e.value) and "I/O error" in e.value.reason and len(calls) == IO_TRIES
    with pytest.raises(DataError, match="I/O error"):
        read_file_bytes(tmp_path / "a.png")
    monkeypatch.undo()
    calls, _ = _flaky_open(monkeypatch, failures=0)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match="corrupt or unreadable image"):
        read_image(tmp_path / "bad.png")
    assert len(calls) == 1  # a decode error is the file's: read once
    calls, _ = _flaky_open(monkeypatch, failures=1)
    assert read_file_bytes(tmp_path / "bad.png").startswith(b"\x89PNG")


@pytest.mark.parametrize("mode, fmt", [("I;16", "PNG"), ("I;16", "TIFF"), ("I", "TIFF")])
def test_16_bit_images_are_scaled_to_8_bits_not_clipped(tmp_path, mode, fmt):
    """A 16-bit gradient 0..65535 becomes 0..255 (its top 8 bits), not 0 then a plateau of 255."""
    ramp = (np.arange(256, dtype=np.int64) * 257)[None].repeat(3, axis=0)
    img = Image.fromarray(ramp.astype(np.uint16 if mode == "I;16" else np.int32))
    assert img.mode == mode
    path = tmp_path / f"ramp.{fmt.lower()}"
    img.save(path, format=fmt)
    out = np.asarray(read_image(path))
    assert out.shape == (3, 256, 3) and out.dtype == np.uint8
    assert out[0, :, 0].tolist() == list(range(256)) and (out == out[..., :1]).all()
