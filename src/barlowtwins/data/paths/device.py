"""The ``device`` data path (the default for folders with a GPU): workers read bytes; JPEGs are decoded in
batches on the device, cropped, resized and coloured there (`transforms.device`, its `OPS`). See
`data.pipeline`'s docstring for the JPEGs that go to PIL instead and what happens to a JPEG the device decoder
refuses."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import cast

import numpy as np
import torch
from PIL import Image

from barlowtwins.data.images import SampleRef, read_file_bytes, read_image
from barlowtwins.data.jpeg import has_jpeg_end, is_jpeg, jpeg_header
from barlowtwins.data.paths.files import _FilePath, _FileSamples
from barlowtwins.errors import DataError
from barlowtwins.runtime.log import get_logger
from barlowtwins.transforms.device import OPS as DEVICE_OPS
from barlowtwins.transforms.device import decode_batch
from barlowtwins.transforms.params import view_params
from barlowtwins.transforms.spec import AugmentConfig, run_ops

log = get_logger(__name__)

# SOF markers nvJPEG decodes: baseline (C0), extended 8-bit Huffman (C1), progressive (C2). Lossless (C3,
# C7, CB, CF), arithmetic-coded (C9-CB, CD-CF) and hierarchical (C5-C7, CD-CF) JPEGs, 12-bit samples and
# CMYK/YCCK (4 components) go to PIL in the worker instead.
_DEVICE_SOF = (0xC0, 0xC1, 0xC2)


def device_decodable(data: bytes) -> bool:
    """True when nvJPEG can decode these JPEG bytes, they end with the end-of-image marker (`has_jpeg_end`: a
    truncated file may come back from nvJPEG as garbage, without an error) and PIL's pixel cap
    (``Image.MAX_IMAGE_PIXELS``, which the device decoder ignores) allows them; the others are decoded by PIL
    (`read_image`: the cap applies; a truncated file is reported as on the cpu path)."""
    if not has_jpeg_end(data):
        return False
    header = jpeg_header(data)
    if header is None:
        return True  # no readable frame header: the decoder refuses it, and the file is handled then
    sof, precision, h, w, components = header
    cap = Image.MAX_IMAGE_PIXELS
    return sof in _DEVICE_SOF and precision == 8 and components in (1, 3) and not (cap and h * w > cap)


class _Bytes(_FileSamples):
    """Worker side of the device path: ``(index, step, position)`` -> the file's bytes (a JPEG nvJPEG can
    decode), or the decoded (3, H, W) uint8 image (other formats, JPEGs nvJPEG cannot decode, and those it
    refused earlier in the run, ``refused[index]``: decoded here, on the CPU, with PIL). ``refused``: a (files,)
    bool tensor in shared memory that the training process sets (`DevicePath`); None: none refused."""

    def __init__(self, files: list[str], aug: AugmentConfig, seed: int, strict: bool,
                 refused: torch.Tensor | None = None):
        super().__init__(files, aug, seed, strict)
        self.refused = refused

    def __getitem__(self, key):
        i, step, pos = key

        def read(j):
            path = self.files[j]
            data = read_file_bytes(path)  # transient storage errors retried; a vanished file is a DataError
            earlier = self.refused is not None and bool(self.refused[j])
            if not earlier and is_jpeg(data) and device_decodable(data):
                return True, torch.frombuffer(bytearray(data), dtype=torch.uint8), j
            img = read_image(data, name=path)
            return False, torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), j

        (encoded, data, source), note = self.read_first_readable_at(i, read)
        return encoded, data, i, step, pos, note, source


class ByteBatch:
    """A batch of the device path, read as a dict (``batch["bytes"]``; see `_collate_bytes`). Its own
    `pin_memory`, which the loader's pin thread calls (``pin_memory=True`` on CUDA), pins the images the
    workers decoded, for asynchronous copies to the device, and nothing else: the JPEG bytes are read by the
    decoder on the host, pinning them would only cost time. Not a ``Mapping``, so that no loader version pins
    its fields one by one instead."""

    def __init__(self, fields: dict):
        self.fields = fields

    def __getitem__(self, key: str):
        return self.fields[key]

    def __contains__(self, key: str) -> bool:
        return key in self.fields

    def keys(self):
        return self.fields.keys()

    def pin_memory(self, device=None) -> ByteBatch:
        """This batch with its worker-decoded images in pinned memory (the other fields shared, not copied)."""
        images = [None if img is None else img.pin_memory() for img in self.fields["images"]]
        return ByteBatch({**self.fields, "images": images})


def _collate_bytes(samples) -> ByteBatch:
    """The device path's batch: the JPEG bytes of all samples in ONE uint8 tensor (one shared-memory file per
    batch, not one per sample), ``offsets`` (n_jpeg + 1,) int64 delimiting each file's bytes in sample order,
    the CPU-decoded (3, H, W) uint8 images of the other samples (None for JPEG samples), and ``source`` (n,) the
    index of the file each sample was read from (the asked one, or its replacement when that was unreadable;
    samples of six fields: the asked one)."""
    encoded, data, idx, step, pos, note = list(zip(*(s[:6] for s in samples)))
    source = [s[6] if len(s) > 6 else s[2] for s in samples]
    jpegs = [d for e, d in zip(encoded, data) if e]
    offsets = torch.zeros(len(jpegs) + 1, dtype=torch.int64)
    if jpegs:
        offsets[1:] = torch.tensor([len(d) for d in jpegs]).cumsum(0)
    return ByteBatch({"encoded": list(encoded),
                      "bytes": torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8), "offsets": offsets,
                      "images": [None if e else d for e, d in zip(encoded, data)],
                      "index": torch.tensor(idx), "step": torch.tensor(step), "position": torch.tensor(pos),
                      "source": torch.tensor(source), "skipped": list(note)})


def batch_jpegs(batch: ByteBatch) -> list[torch.Tensor]:
    """The JPEG bytes of a `_collate_bytes` batch, one 1-D uint8 view of ``bytes`` per JPEG sample."""
    o = batch["offsets"].tolist()
    return [batch["bytes"][o[k]: o[k + 1]] for k in range(len(o) - 1)]


class DevicePath(_FilePath):
    """Files, read as bytes in the workers; JPEG decode, crops and colour batched on the device."""

    kind = "device"
    # The loader pins a batch (`ByteBatch.pin_memory`: only the images the workers decoded, not the bytes, which
    # nvJPEG reads on the host), so that those images reach the device by asynchronous copies.
    pin = True
    SIZE_SAMPLE = 64  # files whose sizes estimate a batch's bytes

    def __init__(self, dataset, aug, **kw) -> None:
        super().__init__(dataset, aug, **kw)
        # (files,) bool in shared memory, made before the loader workers fork: a file the device decoder refused
        # is marked here by this process, and the workers decode it with PIL for the rest of the run.
        self.refused = torch.zeros(len(self.files), dtype=torch.bool).share_memory_()
        self.refused_names: list[str] = []

    def batch_bytes(self) -> int | None:
        """One batch of this rank in shared memory: the mean size of up to `SIZE_SAMPLE` files (spread over the
        data set) times the batch. Images the workers decode (other formats, refused JPEGs) are larger than
        their files but rare in a JPEG folder: not counted. None when no size can be read."""
        n = len(self.files)
        sizes = []
        for k in np.linspace(0, n - 1, min(n, self.SIZE_SAMPLE)).astype(int) if n else []:
            f = self.files[k]
            try:
                size = f.size if isinstance(f, SampleRef) else os.stat(f).st_size
            except OSError:
                continue
            if size > 0:
                sizes.append(size)
        return int(np.mean(sizes) * self.batch_size) if sizes else None

    def epoch(self, epoch: int = 0, start: int = 0) -> Iterator[tuple]:
        samples = lambda: _Bytes(self.files, self.aug, self.seed, self.strict, self.refused)  # noqa: E731
        for batch in self._batches(samples, epoch, start, collate=_collate_bytes):
            self._note_skips(batch["skipped"])
            yield batch, self.labels[batch["index"]], batch["index"]

    def decode(self, batch: ByteBatch) -> list[torch.Tensor]:
        """The batch's images as (3, H_i, W_i) uint8 on the device. A JPEG the device decoder refuses is
        decoded by PIL (the CPU path's decoder) and used as is, and remembered (`refused`), so that the workers
        decode it with PIL from then on; only a file PIL cannot read either is replaced by the next readable
        file, with a warning."""
        jpeg = [k for k, e in enumerate(batch["encoded"]) if e]
        encoded = batch_jpegs(batch)
        images = [d.to(self.device, non_blocking=True) if d is not None else None for d in batch["images"]]
        decoded, errors = decode_batch(encoded, self.device)
        failures, refused = iter(errors), []
        for j, (k, img) in enumerate(zip(jpeg, decoded)):
            if img is None:
                source = int(batch["source"][k]) if "source" in batch else int(batch["index"][k])
                self.refused[source] = True
                refused.append(self.files[source])
                images[k] = self._cpu_decode(source, encoded[j], next(failures))
            else:
                images[k] = img
        if refused:
            self._say_refused(refused)
        return cast("list[torch.Tensor]", images)  # every JPEG's place filled above; the others decoded in workers

    def _say_refused(self, paths: list[str]) -> None:
        """One warning line for the files the device decoder refused in a batch (the first three named)."""
        self.refused_names += paths
        shown = ", ".join(paths[:3]) + (f" and {len(paths) - 3} more" if len(paths) > 3 else "")
        log.warning(f"warning: the device JPEG decoder refused {len(paths)} file(s) ({shown}); they are decoded "
                    f"with PIL in the loader workers from now on ({len(self.refused_names)} in this run)")

    def _cpu_decode(self, i: int, data: torch.Tensor, reason: str) -> torch.Tensor:
        """A JPEG refused by the device decoder, decoded by PIL; if PIL cannot read it either, the next
        readable file (the CPU path's rule)."""
        try:
            img = read_image(data.numpy().tobytes(), name=self.files[i])
        except DataError as e:
            return self._replacement(i, f"{reason}; {getattr(e, 'reason', e)}")
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).to(self.device)

    def _replacement(self, i: int, reason: str) -> torch.Tensor:
        path = self.files[i]
        if self.strict:
            raise DataError(f"corrupt or unreadable image {path} ({reason}); remove or replace the file")
        self._note_skips([f"{path}\t{reason}"])
        samples = _FileSamples(self.files, self.aug, self.seed, strict=False)
        img, _ = samples.read_first_readable((i + 1) % len(self.files), read_image)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).to(self.device)

    def _views(self, batch: ByteBatch, step: int, crops: bool) -> tuple[torch.Tensor, ...]:
        if int(batch["step"][0]) != step:
            raise RuntimeError(f"batch of step {int(batch['step'][0])} used at step {step}")
        images = self.decode(batch)
        heights = np.array([img.shape[1] for img in images])
        widths = np.array([img.shape[2] for img in images])
        out, aug, pos = [], self.aug_at(step), batch["position"].numpy()
        for v in (0, 1):
            p = view_params(aug, v, self.seed, step, pos, heights, widths)
            out.append(self.batch_views.finish(run_ops(DEVICE_OPS, images, p, aug)))
        if crops:  # every small crop in one pass of each op (the decoded images listed once per crop)
            assert self.multicrop is not None  # crops only with multi-crop on (`all_views`)
            small, finisher = self._crop_views_at(step)
            m = self.multicrop.count
            p = self.multicrop.all_params(aug, self.seed, step, pos, heights, widths)
            out += finisher.finish(run_ops(DEVICE_OPS, images * m, p, small)).chunk(m)
        return tuple(out)
