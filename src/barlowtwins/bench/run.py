"""Throughput measurements behind ``barlowtwins bench``: model only, data path only, end to end, and the
official Barlow Twins per-image PIL pipeline for comparison, with FLOPs, MFU and peak memory.

    >>> spec = BenchSpec(backbone="resnet50", image_size=224, batch_size=64, data_paths=("cpu",), workers=2)
    >>> result = run_bench(spec, jpeg_dir="/tmp/jpegs")          # a BenchResult; .to_dict() is the JSON

Samples/s are two-view samples per second (one sample = one image = two views). Every figure is timed after
``warmup`` batches (worker start-up, cuDNN autotuning and allocator growth excluded), over ``iters`` batches,
with the device synchronised at both ends; the measurements run in turn ``repeats`` times and each reports
its median (all runs are kept in the JSON). FLOPs of one training step (forward + backward of both views) are
counted with ``torch.utils.flop_counter.FlopCounterMode``; MFU = achieved FLOP/s over the device's peak, only
where the peak is known (`PEAK_TFLOPS`).

Every measurement is isolated: one that fails, or runs past ``time_limit``, is named in the result's ``errors``
and the others still run; the result is handed to ``on_update`` after each one (the command saves its JSON and
its RESULTS.md row each time), so a later failure or a kill loses nothing already measured. Rows are keyed by
the data path that was asked for: a device path that fell back to the cpu one is a row of its own,
``"device (fell back to cpu)"``.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torchvision
from PIL import __version__ as pil_version
from torch.utils.flop_counter import FlopCounterMode

from barlowtwins.bench.official import _readable_batches, official_loader
from barlowtwins.bench.timing import (
    Timing,
    _cycle,
    _peak_memory,
    measure_batches,
    time_limit,
)
from barlowtwins.data.bad_files import (
    collect_bad_files,
    refuse_unreadable,
    short_reason,
)
from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.pipeline import build_pipeline, choose_data_path
from barlowtwins.data.sampling import default_workers
from barlowtwins.data.shard_writer import write_shards
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.runtime.hardware import (
    autocast_dtype,
    select_device,
    usable_cpus,
)
from barlowtwins.training.config import PretrainConfig
from barlowtwins.training.optim import build_optimizer, set_learning_rates
from barlowtwins.training.run import build_pretrain_model
from barlowtwins.training.step import optimizer_step
from barlowtwins.transforms.spec import augment_config
from barlowtwins.version import __version__

# Dense peak TFLOP/s by device name (vendor data sheets, SXM parts unless named): bf16 tensor cores, fp32 CUDA cores.
PEAK_TFLOPS = {
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.0, "fp32": 67.0},
    "H200": {"bf16": 989.0, "fp32": 67.0},
    "A100": {"bf16": 312.0, "fp32": 19.5},
}


def peak_tflops(device: torch.device, dtype: str) -> float | None:
    """The device's peak dense TFLOP/s for ``dtype`` (bf16 | fp32), or None when not in `PEAK_TFLOPS` (CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):  # "H100 PCIe" before "H100"
        if key in name:
            return PEAK_TFLOPS[key][dtype]
    return None


@dataclass
class BenchSpec:
    """What to measure. ``data_paths``: any of cpu, device (folders) or memory (an in-memory ``dataset``)."""

    backbone: str = "resnet50"
    stem: str = "standard"
    width: int | None = None
    projector: str = "8192-8192-8192"
    image_size: int = 224
    batch_size: int = 64
    precision: str = "auto"
    device: str = "auto"
    data_paths: tuple[str, ...] = ("cpu",)
    workers: int | None = None
    iters: int = 20
    warmup: int = 3
    repeats: int = 3  # each measurement this many times, in turn; the median is reported
    official: bool = True  # also time the official per-image PIL pipeline
    dataset: str | None = None  # an in-memory data set (e.g. fashion-mnist) instead of a JPEG folder
    data_dir: str | None = None
    seed: int = 0
    channels_last: bool = True
    strict_data: bool = False  # refuse unreadable image files before any measurement instead of skipping them
    shards: bool = False  # also read the same images from WebDataset shards written to a temporary folder
    # seconds per run of a measurement: its timing stops after the batch in hand once they have passed, and a
    # run still going at 1.5 times the limit is stopped (`time_limit`) and named in the errors; None: no limit
    time_limit: float | None = None


@dataclass
class BenchResult:
    spec: dict
    environment: dict
    model_only: dict = field(default_factory=dict)
    data_only: dict = field(default_factory=dict)  # data path -> samples/s
    end_to_end: dict = field(default_factory=dict)  # data path -> samples/s
    official_pil: float | None = None  # samples/s
    runs: dict = field(default_factory=dict)  # measurement -> samples/s of every repeat, in order
    notes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # unreadable files skipped: [{"file": ..., "reason": ...}]
    paths: list[str] = field(default_factory=list)  # the data-path rows, in order (see the module docstring)
    ratios: dict = field(default_factory=dict)  # "end to end cpu / model only" etc. -> ratio of the medians
    errors: dict = field(default_factory=dict)  # measurement (or "model", "flops", "shards") -> one line
    pending: list[str] = field(default_factory=list)  # measurements with runs still to come

    @property
    def skipped_files(self) -> int:
        return len(self.skipped)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "skipped_files": len(self.skipped)}


def environment(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{_cpu_model() or platform.processor() or platform.machine()} ({usable_cpus()} cores)"
    return {"device": name, "device_type": device.type, "cpus": usable_cpus(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": pil_version, "barlowtwins": __version__,
            "python": platform.python_version(), "date": datetime.date.today().isoformat()}


def _cpu_model() -> str:
    """The CPU's model name on Linux (``/proc/cpuinfo``), else ""."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


class _Model:
    """The trainer's network (`build_pretrain_model` of the spec's architecture), LARS and one training step on two
    views (`optimizer_step`, the trainer's own step)."""

    def __init__(self, spec: BenchSpec, device: torch.device, amp_dtype):
        cfg = PretrainConfig(backbone=spec.backbone, stem=spec.stem, width=spec.width, projector=spec.projector)
        torch.manual_seed(spec.seed)
        self.model = build_pretrain_model(cfg).to(device)
        if spec.channels_last and device.type == "cuda":
            self.model.to(memory_format=torch.channels_last)
        self.opt = build_optimizer(cfg.optimizer, self.model, cfg.lr_weights, cfg.lr_biases, cfg.weight_decay,
                                   cfg.momentum, cfg.eta)
        set_learning_rates(self.opt, 0.01)
        self.device, self.amp_dtype = device, amp_dtype

    def step(self, x1: torch.Tensor, x2: torch.Tensor) -> None:
        optimizer_step(self.model, self.opt, self.device, self.amp_dtype, x1, x2)

    def flops_per_step(self, x1: torch.Tensor, x2: torch.Tensor) -> int:
        counter = FlopCounterMode(display=False)
        with counter:
            self.step(x1, x2)
        return int(counter.get_total_flops())


def run_bench(spec: BenchSpec, jpeg_dir: str | os.PathLike | None = None, log=print,
              on_update: Callable[[BenchResult], None] | None = None) -> BenchResult:
    """Measure what ``spec`` asks for (see the module docstring); ``jpeg_dir`` is the folder for file paths.

    Bad input (an unknown data path, unreadable data, too few images) is raised before any work. Then every
    measurement is isolated (`_measure`): a failure is named in ``errors`` and the rest still run.
    ``on_update(result)`` is called after the set-up and after every measurement, with the figures so far.
    """
    device = select_device(spec.device)
    amp_dtype = autocast_dtype(spec.precision, device)
    workers = default_workers() if spec.workers is None else spec.workers
    result = BenchResult(spec={**dataclasses.asdict(spec), "workers": workers}, environment=environment(device))
    n, s = spec.batch_size, spec.image_size
    # The data first (an in-memory data set, or a folder of images), so that bad input stops before any work.
    if spec.dataset:
        dataset = build_dataset(spec.dataset, spec.data_dir, "train")
    else:
        dataset = build_dataset("images", jpeg_dir)
    path_errors = _check_paths(spec, dataset, device)
    if spec.strict_data and spec.official and not spec.dataset:
        refuse_unreadable(list(dataset.files))
    if len(dataset) < n:
        raise DataError(f"{len(dataset)} images are fewer than one batch of {n}; lower --batch-size or add images "
                        "(--make-jpegs N)")

    # Model only: synthetic views already on the device. A model that cannot be built (out of memory) costs the
    # model-only and end-to-end figures, not the data paths'.
    model, flops, x1, x2 = None, None, None, None
    try:
        model = _Model(spec, device, amp_dtype)
        g = torch.Generator().manual_seed(spec.seed)
        x1 = torch.randn(n, 3, s, s, generator=g).to(device)
        x2 = torch.randn(n, 3, s, s, generator=g).to(device)
        if spec.channels_last and device.type == "cuda":
            x1, x2 = (x.contiguous(memory_format=torch.channels_last) for x in (x1, x2))
    except Exception as e:  # noqa: BLE001 -- named in the result; the data paths are still measured
        model, result.errors["model"] = None, _one_line(e)
        log(f"model: FAILED ({result.errors['model']})")
    if model is not None:
        assert x1 is not None and x2 is not None  # made with the model: a failure on the way unset the model
        try:
            flops = model.flops_per_step(x1, x2)
        except Exception as e:  # noqa: BLE001 -- no FLOPs, no MFU: the samples/s are still measured
            result.errors["flops"] = _one_line(e)
            log(f"flops: FAILED ({result.errors['flops']})")
    peak = peak_tflops(device, "bf16" if amp_dtype == torch.bfloat16 else "fp32")

    # Every measurement, as a function of its deadline returning a `Timing`. They run in turn, `repeats` times
    # (model only, each data path alone and end to end, the official pipeline; again ...), and each reports its
    # median: a slow minute of a shared host then touches every measurement alike instead of one of them.
    measure: dict[str, Callable[[float | None], Timing]] = {}
    if model is not None:
        measure["model only"] = lambda deadline: measure_batches(
            iter(lambda: (x1, x2), None), lambda b: model.step(*b), n, spec.iters, spec.warmup, device, deadline)
    else:
        result.errors["model only"] = "not run: the model could not be built"
    aug = augment_config(s, getattr(dataset, "channels", 3))
    sources, shard_dir = [("", dataset)], None
    if spec.shards and not getattr(dataset, "in_memory", False):  # the same files as tar shards, read alike
        shard_dir = tempfile.mkdtemp(prefix="barlowtwins-bench-shards-")
        try:
            write_shards(dataset, shard_dir, shard_bytes=64 * 2 ** 20, seed=spec.seed)
            sources.append((" shards", build_dataset("webdataset", shard_dir)))
        except Exception as e:  # noqa: BLE001 -- the folder's figures do not need the shards
            result.errors["shards"] = _one_line(e)
    pipes = {}
    for (suffix, source), path in ((x, p) for x in sources for p in spec.data_paths):
        try:
            if path in path_errors:
                raise ConfigError(path_errors[path])
            pipe = build_pipeline(source, aug, batch_size=n, seed=spec.seed, device=device, data_path=path,
                                  workers=workers)
        except Exception as e:  # noqa: BLE001 -- this path's two measurements are named; the others run
            for what in ("data path", "end to end"):
                result.errors[f"{what} {path}{suffix}"] = _one_line(e)
            continue
        key = path_key(path, pipe.kind, choose_data_path(path, source, device)) + suffix
        result.paths.append(key)
        pipes[key] = pipe
        measure[f"data path {key}"] = _data_path_measurement(pipe, None, spec, device)
        if model is not None:
            measure[f"end to end {key}"] = _data_path_measurement(pipe, model, spec, device)
        else:
            result.errors[f"end to end {key}"] = "not run: the model could not be built"
    if spec.official and not spec.dataset:
        def official(deadline):
            loader = official_loader(list(dataset.files), s, n, workers, persistent=True,  # its workers end with it
                                     skip_unreadable=True)
            return measure_batches(_cycle(lambda e: _readable_batches(loader)), lambda b: b[0][0].to(device), n,
                                   spec.iters, spec.warmup, device, deadline)

        measure["official PIL pipeline"] = official
    result.pending = list(measure)
    summary = lambda: _summarise(result, flops, peak, n, device)  # noqa: E731
    update = on_update or (lambda r: None)
    summary()
    update(result)
    try:
        with collect_bad_files() as bad:
            def after_each() -> None:
                summary()
                _note_skips(bad, pipes, result)
                update(result)

            _measure(measure, pipes, spec, result, log, after_each)
    finally:
        if shard_dir is not None:
            shutil.rmtree(shard_dir, ignore_errors=True)
    _note_skips(bad, pipes, result)
    summary()
    return result


def _check_paths(spec: BenchSpec, dataset, device: torch.device) -> dict[str, str]:
    """Build each asked-for path once without workers, before any work: an unknown path name or data that cannot
    be read (with ``strict_data``: any unreadable file) is raised; a path that cannot run here (its decoder
    fails its self-test) is returned, path -> one line, and costs only that path's figures."""
    errors = {}
    for path in spec.data_paths:
        choose_data_path(path, dataset, device)  # an unknown name is a ConfigError here
        try:
            build_pipeline(dataset, augment_config(spec.image_size), batch_size=spec.batch_size, seed=spec.seed,
                           device=device, data_path=path, workers=0, strict=spec.strict_data)
        except ConfigError as e:
            errors[path] = str(e)
    return errors


def path_key(asked: str, kind: str, expected: str) -> str:
    """The row of a data path: the one that was ``asked`` for (``expected``: what it resolves to here, e.g.
    auto -> memory), or ``"<asked> (fell back to <kind>)"`` when the pipeline built is another one."""
    return expected if kind == expected else f"{asked} (fell back to {kind})"


def _data_path_measurement(pipe, model: "_Model | None", spec: BenchSpec, device: torch.device):
    """The measurement of one data path: its views alone (``model`` None), or a training step on them."""
    def run(deadline: float | None) -> Timing:
        state = {"step": 0}

        def epochs(e):
            for batch, _, _ in pipe.epoch(e):
                yield batch

        def views(batch):
            out = pipe.views(batch, state["step"])
            state["step"] += 1
            return out

        consume = views if model is None else (lambda b: model.step(*_cl(views(b), spec, device)))
        return measure_batches(_cycle(epochs), consume, spec.batch_size, spec.iters, spec.warmup, device, deadline)

    return run


def _note_skips(bad, pipes: dict, result: BenchResult) -> None:
    """The unreadable files seen so far: the loaders' and the data paths' own counts."""
    for pipe in pipes.values():
        for f, why in pipe.skipped.items():
            bad.add(f, short_reason(why))
    result.skipped = bad.as_list()


def _median(values) -> float | None:
    return float(np.median(values)) if values else None


def _summarise(result: BenchResult, flops: int | None, peak: float | None, n: int, device: torch.device) -> None:
    """The figures from the runs so far: medians, FLOP/s and MFU, the ratios, peak memory."""
    rate = _median(result.runs.get("model only"))
    tflops = flops * rate / n / 1e12 if flops and rate else None
    result.model_only = {"samples_per_sec": rate, "gflop_per_sample": flops / n / 1e9 if flops else None,
                         "tflops": tflops, "mfu": tflops / peak if tflops and peak else None, "peak_tflops": peak}
    data = {k: _median(result.runs.get(f"data path {k}")) for k in result.paths}
    e2e = {k: _median(result.runs.get(f"end to end {k}")) for k in result.paths}
    result.data_only = {k: v for k, v in data.items() if v is not None}
    result.end_to_end = {k: v for k, v in e2e.items() if v is not None}
    result.official_pil = _median(result.runs.get("official PIL pipeline"))
    result.ratios = ratios(result)
    key, value = _peak_memory(device)
    result.model_only[key] = value


def ratios(result: BenchResult) -> dict:
    """Each path end to end over model only, each data path over the official pipeline and over the first data
    path (device / cpu), from the medians measured so far."""
    out = {}
    model = result.model_only.get("samples_per_sec")
    for k, v in result.end_to_end.items():
        if model:
            out[f"end to end {k} / model only"] = v / model
    for k, v in result.data_only.items():
        if result.official_pil:
            out[f"data path {k} / official PIL"] = v / result.official_pil
    keys = [k for k in result.paths if k in result.data_only]
    for k in keys[1:]:
        out[f"data path {k} / data path {keys[0]}"] = result.data_only[k] / result.data_only[keys[0]]
    return out


def _one_line(e: BaseException) -> str:
    """An error as one line: its type and the last line of its message (a loader worker's error carries the
    worker's traceback), at most 300 characters."""
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".rstrip(": ")[:300]


def _measure(measure: dict, pipes: dict, spec: BenchSpec, result: BenchResult, log, update) -> None:
    """Run every measurement ``repeats`` times in turn, each run in its own try and under its own time limit;
    ``update()`` after each. A measurement that failed is not run again (its error names the run)."""
    repeats = max(1, spec.repeats)
    hard = spec.time_limit * 1.5 if spec.time_limit else None
    for r in range(repeats):
        for name, fn in measure.items():
            if name in result.errors:
                continue
            timing, run = None, f" (run {r + 1} of {repeats})"
            try:
                deadline = time.perf_counter() + spec.time_limit if spec.time_limit else None
                with time_limit(hard, f"'{name}'"):
                    timing = fn(deadline)
            except Exception as e:  # noqa: BLE001 -- named in the result; the other measurements still run
                if timing is None:  # a timer that fired just after the measurement ended takes nothing away
                    result.errors[name] = _one_line(e) + (run if repeats > 1 else "")
                    log(f"{name}: FAILED {result.errors[name]}")
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()  # what a failed run held (an out-of-memory one) is free again
            finally:
                for pipe in pipes.values():  # no worker of this measurement may still be busy during the next
                    pipe.close()
            if timing is not None:
                result.runs.setdefault(name, []).append(timing.rate)
                if timing.batches < spec.iters:
                    result.notes.append(f"{name}: run {r + 1} stopped at the time limit after {timing.batches} of "
                                        f"{spec.iters} timed batches")
                log(f"{name}: {timing.rate:.1f} samples/s{run}")
            if name in result.pending and (r == repeats - 1 or name in result.errors):
                result.pending.remove(name)
            update()


def _cl(xs, spec: BenchSpec, device: torch.device):
    if spec.channels_last and device.type == "cuda":
        return tuple(x.contiguous(memory_format=torch.channels_last) for x in xs)
    return xs
