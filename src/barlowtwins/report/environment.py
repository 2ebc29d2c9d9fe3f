"""What this installation can do, for bug reports: versions, optional extras, devices, workers, data found.

    >>> info = collect()          # a plain dict (JSON-ready)
    >>> print(format_text(info))
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys

import torch

from barlowtwins.data.datasets import FASHION_MNIST_DIRS, find_fashion_mnist
from barlowtwins.data.sampling import default_workers
from barlowtwins.runtime.hardware import cpu_bf16_feature, select_device, usable_cpus
from barlowtwins.version import __version__

# Optional packages: (what it is for, module, how to install). The report's extras are declared in pyproject.toml.
OPTIONAL = {
    "matplotlib": ("barlowtwins report", "matplotlib", "pip install 'barlowtwins[report]'"),
    "tensorboard": ("--tensorboard", "tensorboard", "pip install 'barlowtwins[tensorboard]'"),
    "umap-learn": ("UMAP maps in the report (else t-SNE)", "umap", "pip install 'barlowtwins[umap]'"),
    "scikit-learn": ("t-SNE maps in the report (else PCA)", "sklearn", "pip install scikit-learn"),
    "timm": ("timm backbones", "timm", "pip install timm"),
    "onnx": ("ONNX export", "onnx", "pip install onnx"),
    "onnxruntime": ("checking ONNX exports", "onnxruntime", "pip install onnxruntime"),
    "safetensors": ("safetensors weights", "safetensors", "pip install safetensors"),
    "pycocotools": ("COCO detection evaluation", "pycocotools", "pip install pycocotools"),
}


def _version(module: str) -> str | None:
    """The installed version of a module, or None when it is not importable (found without importing it)."""
    if importlib.util.find_spec(module) is None:
        return None
    dist = {"sklearn": "scikit-learn", "umap": "umap-learn"}.get(module, module)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def _cuda_devices() -> list[dict]:
    devices: list[dict] = []
    if not torch.cuda.is_available():
        return devices
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        major, minor = p.major, p.minor
        devices.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                        "compute_capability": f"{major}.{minor}", "bf16": major >= 8,  # Ampere and later
                        "multiprocessors": p.multi_processor_count})
    return devices


def _compile_status() -> dict:
    """Whether torch.compile can be used: the function exists, and its default backend's compiler is present."""
    status: dict[str, bool | str] = {"available": hasattr(torch, "compile")}
    if sys.platform == "win32":
        status["note"] = "torch.compile's default backend is not supported on Windows"
    try:
        importlib.import_module("torch._dynamo")  # the compiler front end: present and importable
        status["dynamo"] = True
    except Exception as e:  # a broken install must not stop the report
        status["dynamo"] = False
        status["note"] = str(e).splitlines()[0]
    return status


def _datasets() -> dict:
    found: dict[str, str | list[str] | None] = {}
    try:
        found["fashion-mnist"] = str(find_fashion_mnist())
    except Exception:
        found["fashion-mnist"] = None
    found["fashion-mnist_searched"] = [*FASHION_MNIST_DIRS] + (
        [os.environ["FASHION_MNIST_DIR"]] if os.environ.get("FASHION_MNIST_DIR") else [])
    return found


def collect() -> dict:
    """Everything `barlowtwins env` reports, as a JSON-ready dict."""
    mps = getattr(torch.backends, "mps", None)
    return {
        "barlowtwins": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "numpy": _version("numpy"),
        "optional": {dist: {"version": _version(module), "for": why, "install": how}
                     for dist, (why, module, how) in OPTIONAL.items()},
        "cuda": {"available": torch.cuda.is_available(), "version": torch.version.cuda,
                 "devices": _cuda_devices(),
                 "nccl": torch.distributed.is_available() and torch.distributed.is_nccl_available()},
        "mps": bool(mps is not None and mps.is_available()),
        "default_device": str(select_device("auto")),
        "cpu": {"count": os.cpu_count(), "usable": usable_cpus(), "threads": torch.get_num_threads(),
                "capability": torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else None,
                "bf16": cpu_bf16_feature()},
        "workers": {"default": default_workers(1), "rule": "usable CPUs per process - 1, between 1 and 10"},
        "compile": _compile_status(),
        "distributed": {"available": torch.distributed.is_available(),
                        "gloo": torch.distributed.is_available() and torch.distributed.is_gloo_available()},
        "datasets": _datasets(),
    }


def format_text(info: dict) -> str:
    """The plain-text form of :func:`collect`'s dict."""
    yes = lambda b: "yes" if b else "no"  # noqa: E731
    lines = [f"barlowtwins {info['barlowtwins']}",
             f"python      {info['python']} ({info['platform']})",
             f"torch       {info['torch']}",
             f"torchvision {info['torchvision']}",
             f"numpy       {info['numpy']}",
             "optional packages:"]
    for dist, o in info["optional"].items():
        state = o["version"] or f"missing ({o['install']})"
        lines.append(f"  {dist:<13}{state:<50} for {o['for']}")
    cuda = info["cuda"]
    built = f"torch built with CUDA {cuda['version']}" if cuda["version"] else "torch built without CUDA"
    lines.append(f"cuda        {yes(cuda['available'])} ({built}"
                 + (f", NCCL {yes(cuda['nccl'])})" if cuda["available"] else ", no GPU visible)"))
    for d in cuda["devices"]:
        lines.append(f"  cuda:{d['index']} {d['name']}, {d['memory_gib']} GiB, compute capability "
                     f"{d['compute_capability']}, bf16 {yes(d['bf16'])}")
    cpu = info["cpu"]
    lines += [f"mps         {yes(info['mps'])}",
              f"device      {info['default_device']} (what --device auto picks)",
              f"cpus        {cpu['count']} ({cpu['usable']} usable, torch threads {cpu['threads']}, "
              f"{cpu['capability']}, native bf16 {cpu.get('bf16') or 'no'}: --precision auto picks "
              f"{'bf16' if cpu.get('bf16') else 'fp32'} on the CPU)",
              f"workers     {info['workers']['default']} data-loader processes by default "
              f"({info['workers']['rule']})",
              f"compile     torch.compile {yes(info['compile']['available'] and info['compile']['dynamo'])}"
              + (f" ({info['compile']['note']})" if info["compile"].get("note") else ""),
              f"distributed {yes(info['distributed']['available'])} (gloo {yes(info['distributed']['gloo'])})"]
    fm = info["datasets"]["fashion-mnist"]
    lines.append("datasets    fashion-mnist " + (f"found in {fm}" if fm else
                 "not found (Debian/Ubuntu: apt-get install dataset-fashion-mnist; or --download)"))
    return "\n".join(lines)
