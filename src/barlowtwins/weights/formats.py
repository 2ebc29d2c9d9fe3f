"""Export formats: a backbone from any source we read (`weights.sources`), written for use elsewhere.

    >>> export_backbone_file("runs/fmnist", "onnx", "backbone.onnx")

Formats are entries of `EXPORT_FORMATS` (name -> writer, file suffix, description); `register_export_format`
adds one, and ``barlowtwins export --format`` offers every entry:

* ``pth``: a plain torchvision state dict (``torchvision.models.resnet50().load_state_dict(sd, strict=False)``);
* ``safetensors``: the same tensors in a file that loads with no pickle at all; the architecture is kept in
  its metadata (``barlowtwins.arch``), so ``load_backbone("x.safetensors")`` rebuilds the right network;
* ``torchscript``: the traced backbone in eval mode (``torch.jit.load``; no Python class needed);
* ``onnx``: opset-18 graph with a dynamic batch axis, input ``images`` (N, 3, S, S) normalised, output
  ``features`` (N, D); checked against PyTorch's outputs with onnxruntime when it is installed;
* ``detectron2``: the key layout of detectron2's ``tools/convert-torchvision-to-d2.py`` (``stem.conv1``,
  ``res2``..``res5``, ``convK.norm``, ``shortcut``), pickled like that tool does (detectron2 reads ``.pkl``
  checkpoints with pickle); `read_detectron2` reads it back with an unpickler that admits numpy arrays only.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import nn

from barlowtwins.errors import CheckpointError, ConfigError
from barlowtwins.models.backbones import MAX_IMAGE_SIZE, check_int
from barlowtwins.runtime.files import atomic_write, save_atomic
from barlowtwins.runtime.registry import Registry
from barlowtwins.transforms.spec import IMAGENET_MEAN, IMAGENET_STD
from barlowtwins.weights.detectron2 import torchvision_to_detectron2
from barlowtwins.weights.load import build_backbone
from barlowtwins.weights.save import backbone_state, save_safetensors_atomic
from barlowtwins.weights.sources import BackboneSource, load_backbone_state, resolve_arch, without_head

# --------------------------------------------------------------------------------------------------------
# One writer per format
# --------------------------------------------------------------------------------------------------------

@dataclass
class ExportJob:
    """What a writer gets: the source's tensors, the rebuilt module (built lazily), and the input size."""

    src: BackboneSource
    output: Path
    image_size: int
    arch: dict  # what is built: the source's architecture, the explicit arguments over it (`resolve_arch`)

    @property
    def arch_overrides(self) -> dict:
        """``backbone``/``stem``/``width`` of what is built (the arguments `build_backbone` takes)."""
        return {k: self.arch.get(k) for k in ("backbone", "stem", "width")}

    def module(self) -> nn.Module:
        return build_backbone(self.src, **self.arch_overrides)

    def example(self, batch: int = 2) -> torch.Tensor:
        # (batch, 3, S, S); batch 2, not 1, so no exporter specialises the batch axis to a constant
        return torch.randn(batch, 3, self.image_size, self.image_size, generator=torch.Generator().manual_seed(0))


def is_torchvision_shape(arch: dict) -> bool:
    """Whether ``arch`` is a torchvision model as torchvision builds it (standard stem, its own width), so that
    ``torchvision.models.<name>()`` takes the tensors."""
    name = arch.get("backbone") or ""
    return (not name.startswith("timm:") and (arch.get("stem") or "standard") == "standard"
            and arch.get("width") in (None, 64))


def load_line(job: ExportJob, *, self_describing: bool = False) -> str:
    """One line of Python that loads ``job.output`` into the network it was exported from (runnable as printed).

    ``self_describing``: the file records its architecture (safetensors metadata), so no argument is needed."""
    path = str(job.output)
    if self_describing:
        return f"import barlowtwins; net = barlowtwins.load_backbone({path!r})"
    arch = {k: v for k, v in job.arch_overrides.items() if v is not None}
    if job.arch.get("backbone") and is_torchvision_shape(arch) and hasattr(torchvision.models, arch["backbone"]):
        return (f"import torch, torchvision; net = torchvision.models.{arch['backbone']}(); "
                f"net.load_state_dict(torch.load({path!r}), strict=False)")
    args = "".join(f", {k}={v!r}" for k, v in arch.items())
    return f"import barlowtwins; net = barlowtwins.load_backbone({path!r}{args})"


def _write_pth(job: ExportJob) -> str:
    save_atomic(backbone_state(job.src.state), job.output)
    return f"a plain torchvision state dict; load it with: {load_line(job)}"


def _write_safetensors(job: ExportJob) -> str:
    arch = {k: v for k, v in {**job.src.arch, **job.arch}.items() if v is not None}
    save_safetensors_atomic(backbone_state(job.src.state), job.output, arch)
    return (f"safetensors (no pickle, the architecture in its metadata); load it with: "
            f"{load_line(job, self_describing=True)}")


def _write_torchscript(job: ExportJob) -> str:
    net = job.module()
    x = job.example()
    # Tracing (not scripting) works for every torchvision and timm backbone; the traced graph has no
    # data-dependent control flow here, so any batch size and the traced image size are valid inputs.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
        traced = torch.jit.trace(net, x)
        atomic_write(job.output, lambda tmp: torch.jit.save(traced, str(tmp)))
    return f"TorchScript (traced at {job.image_size} px): torch.jit.load(f)"


def _write_onnx(job: ExportJob) -> str:
    """The torch.export-based exporter (``dynamo=True``): the supported one since PyTorch 2.9; the TorchScript-
    based one is deprecated and will be removed. It needs onnxscript (the ``onnx`` extra)."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise ConfigError("ONNX export needs onnx and onnxscript: pip install 'barlowtwins[onnx]'") from None
    net = job.module()
    x = job.example()
    batch = torch.export.Dim("batch")

    def write(tmp: Path) -> None:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (x,), str(tmp), dynamo=True, dynamic_shapes=({0: batch},),
                              input_names=["images"], output_names=["features"], verbose=False,
                              external_data=False)
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
        atomic_write(job.output, write)
    diff = onnx_max_abs_diff(job.output, net, job.example(3))
    check = "onnxruntime not installed, not checked" if diff is None else \
        f"onnxruntime matches PyTorch: max abs diff {diff:.2e} at batch 3"
    return f"ONNX (input 'images' (N, 3, {job.image_size}, {job.image_size}), dynamic N; {check})"


def onnx_max_abs_diff(path: str | os.PathLike, net: nn.Module, x: torch.Tensor) -> float | None:
    """Largest |onnxruntime - PyTorch| over the outputs for input ``x``; None when onnxruntime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = net.eval()(x).numpy()
    if got.shape != want.shape:
        raise CheckpointError(f"ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
    diff = float(np.abs(got - want).max())
    tol = 1e-3 * max(1.0, float(np.abs(want).max()))
    if not diff <= tol:
        raise CheckpointError(f"ONNX export of {path} differs from PyTorch by {diff:.2e} (tolerance {tol:.1e})")
    return diff


def _write_detectron2(job: ExportJob) -> str:
    state = without_head(job.src.state)
    if "conv1.weight" not in state or not any(k.startswith("layer4.") for k in state):
        raise ConfigError("the detectron2 layout is for torchvision ResNets (conv1, layer1..layer4); "
                          f"{job.src.origin} is not one")
    if state["conv1.weight"].shape[-1] != 7:
        raise ConfigError("detectron2's ResNet stem is a 7x7 stride-2 convolution; this backbone was built with "
                          "--stem small/small-pool (3x3) and does not fit it")
    model = {k: v.numpy() for k, v in torchvision_to_detectron2(backbone_state(state)).items()}
    payload = {"model": model, "__author__": "barlowtwins", "matching_heuristics": True}
    mean = [round(255 * m, 3) for m in (job.src.arch.get("mean") or IMAGENET_MEAN)]
    std = [round(255 * s, 3) for s in (job.src.arch.get("std") or IMAGENET_STD)]

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            pickle.dump(payload, f)
    atomic_write(job.output, write)
    return (f"detectron2 .pkl: MODEL.WEIGHTS {job.output} INPUT.FORMAT RGB MODEL.PIXEL_MEAN {mean} "
            f"MODEL.PIXEL_STD {std} MODEL.RESNETS.STRIDE_IN_1X1 False")


# --------------------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportFormat:
    """An export format by name: ``writer(job)`` writes ``job.output`` and returns one line saying what was
    written and how to load it; ``suffix`` is the usual file ending; ``description`` is one line for ``--help``."""

    name: str
    writer: Callable[[ExportJob], str]
    suffix: str
    description: str


EXPORT_FORMATS: Registry[ExportFormat] = Registry("export format")
register_export_format = EXPORT_FORMATS.register  # a new format: one ExportFormat registered here


for _fmt in (
    ExportFormat("pth", _write_pth, ".pth", "a torchvision state dict (torchvision.models.<name>()"
                                            ".load_state_dict(sd, strict=False), only fc.* missing)"),
    ExportFormat("safetensors", _write_safetensors, ".safetensors",
                 "the same tensors, loadable with no pickle; the architecture in its metadata"),
    ExportFormat("torchscript", _write_torchscript, ".pt", "the traced backbone (torch.jit.load)"),
    ExportFormat("onnx", _write_onnx, ".onnx",
                 "dynamic batch axis, checked against PyTorch with onnxruntime when installed"),
    ExportFormat("detectron2", _write_detectron2, ".pkl",
                 "the key layout of detectron2's convert-torchvision-to-d2 (a .pkl for MODEL.WEIGHTS)"),
):
    register_export_format(_fmt)


def export_format(name: str) -> ExportFormat:
    """The registry entry of ``name``, with a one-line error naming the closest and the valid names."""
    return EXPORT_FORMATS.lookup(name)


def export_backbone_file(source: str | os.PathLike, fmt: str, output: str | os.PathLike, *,
                         image_size: int | None = None, backbone: str | None = None, stem: str | None = None,
                         width: int | None = None) -> tuple[BackboneSource, str]:
    """Read ``source`` (anything `load_backbone_state` reads) and write it to ``output`` in format ``fmt`` (a name
    of `EXPORT_FORMATS`).

    Every format, even the ones that only copy tensors, first checks that they load into the architecture (the
    source's, explicit arguments over it; strict on the backbone's keys and shapes, ``fc.*`` may be absent).

    Returns the source and a one-line description of what was written and how to load it.
    """
    writer = export_format(fmt).writer
    if image_size is not None:
        image_size = check_int("--image-size", image_size, 1, MAX_IMAGE_SIZE)
    src = load_backbone_state(source)
    arch = resolve_arch(src, backbone=backbone, stem=stem, width=width)
    size = int(image_size or src.arch.get("image_size") or 224)
    job = ExportJob(src, Path(output), size, arch)
    return src, writer(job)
