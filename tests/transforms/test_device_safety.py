"""The device decode's safety on CPU tensors with the CUDA pieces mocked: the decode is ordered after the work
queued on the training stream, the start-up self-test against PIL, errors that are not about a file stop the
run, torchvision's deprecation warning is silenced, and very large crops are pooled before the resize."""

import io
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from barlowtwins.errors import ConfigError
from barlowtwins.transforms import device as dev


def jpeg(seed=0, size=(40, 32), mode="RGB"):
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    buf = io.BytesIO()
    img.convert(mode).save(buf, format="JPEG", quality=90)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


class FakeStream:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def synchronize(self):
        self.log.append((self.name, "synchronize"))

    def wait_stream(self, other):
        self.log.append((self.name, "wait", other.name))


def test_cuda_decode_runs_on_a_side_stream_after_the_queued_work(monkeypatch):
    log, state = [], {"stream": "current"}
    current = FakeStream("current", log)

    class Ctx:
        def __init__(self, s):
            self.s = s

        def __enter__(self):
            state["stream"] = self.s.name

        def __exit__(self, *a):
            state["stream"] = "current"

    monkeypatch.setattr(dev, "_side_streams", {})
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: current)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device=None: FakeStream("side", log))
    monkeypatch.setattr(torch.cuda, "stream", Ctx)
    monkeypatch.setattr(dev, "_decode", lambda enc, d: log.append(("decode on", state["stream"])) or ["a", "b"])
    monkeypatch.setattr(dev, "_record", lambda t, s: log.append(("record", t, s.name)))
    out = dev.decode_jpegs([jpeg(0), jpeg(1)], torch.device("cuda", 0))
    assert out == ["a", "b"]
    assert log == [("side", "synchronize"), ("side", "wait", "current"), ("decode on", "side"),
                   ("current", "wait", "side"), ("record", "a", "current"), ("record", "b", "current")]


def test_self_test_compares_with_pil_once_per_process(monkeypatch):
    monkeypatch.setattr(dev, "_checked", {})
    calls = []
    real = dev._decode
    monkeypatch.setattr(dev, "_decode", lambda enc, d: calls.append(1) or real(enc, d))
    assert dev.check_device_decoder(torch.device("cpu")) is None
    assert dev.check_device_decoder(torch.device("cpu")) is None
    assert len(calls) == 1


def test_self_test_rejects_a_decoder_returning_wrong_pixels(monkeypatch):
    monkeypatch.setattr(dev, "_checked", {})
    monkeypatch.setattr(dev, "_decode", lambda enc, d: [torch.zeros(3, 40, 48, dtype=torch.uint8)] * len(enc))
    with pytest.raises(ConfigError, match="wrong pixels.*--data-path cpu"):
        dev.check_device_decoder(torch.device("cpu"))


def test_self_test_reports_a_missing_decoder_capability(monkeypatch):
    monkeypatch.setattr(dev, "_checked", {})

    def no_lists(enc, d):
        raise TypeError("decode_jpeg() argument 'input' must be Tensor, not list")

    monkeypatch.setattr(dev, "_decode", no_lists)
    why = dev.check_device_decoder(torch.device("cpu"))
    assert "cannot decode JPEGs on cpu" in why and "\n" not in why


@pytest.mark.parametrize("error", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("CUDA error: an illegal memory access was encountered"),
                                   TypeError("decode_jpeg() got an unexpected keyword argument 'device'")])
def test_errors_not_about_the_file_stop_the_run(monkeypatch, error):
    def fail(enc, d):
        raise error

    monkeypatch.setattr(dev, "_decode", fail)
    with pytest.raises(ConfigError, match="JPEG decoding on cpu failed") as e:
        dev.decode_batch([jpeg(0), jpeg(1)], torch.device("cpu"))
    assert "\n" not in str(e.value)


def test_a_refused_file_is_reported_alone(monkeypatch):
    refused = jpeg(1, mode="CMYK")
    real = dev._decode

    def nvjpeg_like(enc, d):
        if any(t.data_ptr() == refused.data_ptr() for t in enc):
            raise RuntimeError("nvjpegDecodeBatchedPhaseOne failed: JPEG codec not supported")
        return real(enc, d)

    monkeypatch.setattr(dev, "_decode", nvjpeg_like)
    images, errors = dev.decode_batch([jpeg(0), refused, jpeg(2)], torch.device("cpu"))
    assert images[1] is None and images[0] is not None and images[2] is not None
    assert errors == ["nvjpegDecodeBatchedPhaseOne failed: JPEG codec not supported"]


def test_the_deprecation_warning_is_silenced_at_the_call_site():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images, errors = dev.decode_batch([jpeg(0), jpeg(1)], torch.device("cpu"))
    assert errors == [] and len(images) == 2


def test_very_large_crops_are_pooled_before_the_antialiased_resize(monkeypatch):
    size = 8
    img = torch.from_numpy(np.asarray(Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (3, 3, 3), dtype=np.uint8)).resize((520, 500), Image.BICUBIC)).copy()
    ).permute(2, 0, 1).contiguous()  # (3, 500, 520), smooth
    seen = []
    real = F.interpolate
    monkeypatch.setattr(F, "interpolate", lambda x, **kw: seen.append(tuple(x.shape[-2:])) or real(x, **kw))
    boxes = torch.tensor([[2, 3, 480, 496], [0, 0, 100, 120]], dtype=torch.float64)  # 60x down: pooled; 12x: not
    out = dev.crop_resize_each([img, img], boxes, size)
    assert seen[0] == (32, 33) and seen[1] == (100, 120)  # pooled by 15 x 15: 4x left for the resize
    for i, (t, l, h, w) in enumerate(boxes.int().tolist()):
        ref = TF.resized_crop(img.float() / 255, t, l, h, w, [size, size], interpolation=InterpolationMode.BICUBIC,
                              antialias=True).clamp(0, 1)
        diff = float((out[i] - ref).abs().max())
        assert diff <= (2 / 255 if i == 0 else 1e-5), diff


def test_a_torchvision_without_image_decoders_makes_the_device_path_unavailable(monkeypatch):
    """torchvision deprecates its decoders: without them the self-test names the reason (the pipeline then takes
    the cpu path), the package still imports."""
    monkeypatch.setattr(dev, "decode_jpeg", None)
    monkeypatch.setattr(dev, "_checked", {})
    why = dev.check_device_decoder(torch.device("cpu"))
    assert why is not None and "no JPEG decoder" in why
