"""The device data path's checks on a CUDA GPU, run by `gpu_check.sh` (nothing downloaded; a few minutes).

0. self_test: the device JPEG decoder against PIL on a small image (`check_device_decoder`);
1. corruption: a busy stream whose queued kernels write freed tensors, then a batched decode of 200 JPEGs;
   decoded images that differ from PIL's are counted, for torchvision's decode on the training stream and
   for the project's ordered `decode_jpegs` (which must have none);
2. sync_audit: one warm-up step (it builds the cached constants), then ``torch.cuda.set_sync_debug_mode("error")``
   around the crops and colour ops of 50 device-path steps (the decode, which drains its side stream, under
   "warn" with the warnings counted);
3. odd_files through the device path: CMYK, progressive, truncated, 7k x 12k (under PIL's pixel cap) and
   12k x 12k (over it) JPEGs;
4. device_vs_cpu: device views against CPU views on the same parameters (the GPU's grouped crops against the
   CPU's per-sample ones), at most `MAX_DIFF_LEVELS` apart;
5. crop_speed: 256 crops of 375 x 500 images (one shape, as most of ImageNet) and of 256 different shapes, the
   grouped matmuls against one ``F.interpolate`` per crop, milliseconds per view.

Each check runs in its own try under its own time limit (`LIMITS`, SIGALRM); the JSON (``--output``) is rewritten
after each one, every section present from the start (``"status": "not run"``), so a failure or a kill loses no
figure already measured. ``GPU_CHECK_FAIL=name[,name]`` makes those checks fail on purpose (the rehearsal's test
of that isolation). Exit status 1 when a check failed.

``--rehearse`` walks every check on a CPU host at small sizes, the CUDA-only calls replaced by CPU counterparts:
no streams (no busy stream), torchvision's CPU ``decode_jpeg`` for nvJPEG, ``device="cpu"``, the grouped crop
forced where the GPU takes it by default, and for the sync audit the views computed on ``meta`` tensors under
`HostSyncAudit`, a dispatch-mode check that refuses what would wait for a GPU (an op reading device data on the
host, a copy back). Its JSON says ``"rehearsal": true``.

``--summary DIR --step NAME=STATUS ...`` (the shell script's last step) writes ``DIR/gpu-check-summary.json``:
each step's exit status, the files written, the failed steps; it marks every result JSON in DIR with
``"rehearsal"``.

Without CUDA (and without --rehearse) it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import os
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode

from barlowtwins.bench import environment, time_limit
from barlowtwins.data.datasets import build_dataset
from barlowtwins.data.pipeline import build_pipeline
from barlowtwins.runtime.files import write_text_atomic
from barlowtwins.transforms.device import (
    OPS,
    check_device_decoder,
    crop_resize,
    crop_resize_each,
    decode_jpegs,
)
from barlowtwins.transforms.params import view_params
from barlowtwins.transforms.spec import augment_config, run_ops

try:  # torchvision deprecates its image decoders; the project's own decode is checked either way
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - depends on the installed torchvision
    ImageReadMode = decode_jpeg = None

NO_CUDA = "gpu_check: no CUDA GPU visible to PyTorch; nothing to check (run it on a GPU host)"
# Seconds each check may take on one H100 (sum 220 s, under the shell script's 240 s for this part).
LIMITS = {"self_test": 20, "corruption": 30, "sync_audit": 60, "odd_files": 50, "device_vs_cpu": 20,
          "crop_speed": 40}
MAX_DIFF_LEVELS = 3.0  # device vs cpu views: float rounding of two resampling orders, not a different image
RESULT_FILES = ("gpu-check.json", "gpu-check-bench.json", "gpu-check-bench.md", "gpu-check.log")


@dataclass(frozen=True)
class Sizes:
    """The sizes of the checks: `GPU` for the real run, `REHEARSAL` for a CPU host (well under a minute)."""

    view: int = 224
    corruption_images: int = 200
    corruption_hw: tuple[int, int] = (480, 640)
    busy_side: int = 8192  # the busy stream's matmuls (0: no busy stream)
    audit_files: int = 128
    audit_batch: int = 32
    audit_steps: int = 50
    audit_workers: int = 4
    audit_hw: tuple[int, int] = (300, 400)
    odd_scale: int = 1  # the odd files' sides divided by this, PIL's pixel cap by its square
    vs_images: int = 32
    vs_hw: tuple[int, int] = (300, 450)
    speed_crops: int = 256
    speed_hw: tuple[int, int] = (375, 500)
    speed_repeats: int = 20


GPU = Sizes()
REHEARSAL = Sizes(view=32, corruption_images=12, corruption_hw=(48, 64), busy_side=0, audit_files=16,
                  audit_batch=4, audit_steps=4, audit_workers=1, audit_hw=(40, 50), odd_scale=10, vs_images=8,
                  vs_hw=(48, 60), speed_crops=8, speed_hw=(48, 64), speed_repeats=2)


@dataclass(frozen=True)
class Ctx:
    """Where the checks run: ``device`` for decoding and the views, and the CPU counterparts when rehearsing."""

    device: torch.device
    sizes: Sizes
    rehearsal: bool


class CheckFailed(Exception):
    """A check that ran but found a defect: ``figures`` are kept in its section beside the error."""

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


class HostSync(RuntimeError):
    """An op that would make the host wait for the GPU (raised by `HostSyncAudit`)."""


# Ops whose result the host needs from device data (a sync on CUDA), by overload packet name.
_READS_DEVICE_DATA = {"_local_scalar_dense", "item", "nonzero", "argwhere", "masked_select", "equal", "is_nonzero",
                      "unique", "_unique", "_unique2", "unique_dim", "unique_consecutive", "allclose"}


class HostSyncAudit(TorchDispatchMode):
    """The rehearsal's stand-in for ``set_sync_debug_mode("error")``: with the device tensors on ``meta``, raises
    `HostSync` on an op that reads device data on the host (``.item()``, ``nonzero``, a boolean-mask index,
    ``repeat_interleave`` by a tensor without ``output_size``) or copies device data back to the host. Copies
    to the device are counted (``to_device``: pinned and non-blocking on CUDA, which meta cannot tell apart)."""

    def __init__(self):
        super().__init__()
        self.host_to_device = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        tensors = [a for a in _flat(args) + _flat(list(kwargs.values())) if isinstance(a, torch.Tensor)]
        on_device = any(t.device.type != "cpu" for t in tensors)
        if on_device and (name in _READS_DEVICE_DATA or _data_dependent(name, args, kwargs)):
            raise HostSync(f"aten.{name} reads device data on the host (a sync on CUDA)")
        source, target = _copy_ends(name, args, kwargs)
        if source is not None and source.type != "cpu" and target.type == "cpu":
            raise HostSync(f"aten.{name} copies device data to the host (a sync on CUDA)")
        if source is not None and source.type == "cpu" and target.type != "cpu":
            self.host_to_device += 1
        return func(*args, **kwargs)


def _flat(items) -> list:
    out = []
    for x in items:
        out += _flat(x) if isinstance(x, (list, tuple)) else [x]
    return out


def _data_dependent(name: str, args, kwargs) -> bool:
    """A boolean-mask index, or ``repeat_interleave`` by a tensor of repeats without ``output_size``."""
    if name in ("index", "index_put", "index_put_"):
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in _flat(args[1:2]))
    if name == "repeat_interleave":
        repeats = args[1] if len(args) > 1 else args[0]
        return isinstance(repeats, torch.Tensor) and kwargs.get("output_size") is None
    return False


def _copy_ends(name: str, args, kwargs) -> tuple[torch.device | None, torch.device | None]:
    """(source, target) devices of a copy between devices, else (None, None)."""
    if name == "_to_copy" and kwargs.get("device") is not None:
        return args[0].device, torch.device(kwargs["device"])
    if name == "copy_":
        return args[1].device, args[0].device
    return None, None


def jpeg(rng, h, w, mode="RGB", **save) -> bytes:
    """A smooth colour field of h x w pixels as JPEG bytes (quality 90)."""
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    buf = io.BytesIO()
    img.convert(mode).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def pil_rgb(data: bytes) -> torch.Tensor:
    """JPEG bytes -> (3, H, W) uint8 decoded by PIL, the reference decoder."""
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def folder_of(root: Path, files: dict) -> Path:
    """root/train/a/<name> for each of ``files`` (name -> bytes): an image folder data set."""
    d = root / "train" / "a"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return root


def crop_both_ways(images: list[torch.Tensor], boxes: torch.Tensor, size: int, grouped: bool,
                   mode: str = "bicubic") -> tuple[torch.Tensor, str]:
    """`crop_resize` grouped (batched matmuls) or per sample, through whatever keyword it has for the choice;
    returns the views and the call that made them. Without a keyword the grouped crop is `crop_resize`'s default
    on an accelerator (on the CPU the label says it was not forced)."""
    if not grouped:
        return crop_resize_each(images, boxes, size, mode), "crop_resize_each"
    if "grouped" in inspect.signature(crop_resize).parameters:
        return crop_resize(images, boxes, size, mode, grouped=True), "crop_resize(grouped=True)"
    return crop_resize(images, boxes, size, mode), f"crop_resize default on {images[0].device.type}"


def _device_ops(ctx: Ctx) -> dict:
    """The executor the device path runs on this device: `OPS`, whose crop is grouped on a GPU; rehearsing on the
    CPU, the same with the grouped crop forced, so the GPU's crop is the one compared."""
    if not ctx.rehearsal:
        return OPS
    return {**OPS, "crop": lambda x, p, cfg: crop_both_ways(x, p.box, cfg.image_size, True, cfg.interpolation)[0]}


# --------------------------------------------------------------------------------------------------------
# The checks: ctx -> figures (a dict); a defect found is `CheckFailed` with the figures.
# --------------------------------------------------------------------------------------------------------

def self_test(ctx: Ctx) -> dict:
    """The device decoder against PIL on a small image, as every device-path run starts."""
    why = check_device_decoder(ctx.device)
    if why is not None:
        raise CheckFailed(why, {"decoder": why})
    return {"decoder": "ok", "decoded_on": str(ctx.device)}


def _busy_stream(device: torch.device, side: int, n: int, hw: tuple[int, int]) -> None:
    """About 0.1 s of matmuls queued on the current stream, then ``n`` freed buffers whose fill is queued behind
    them: a decode that ignores stream order gets their memory and is overwritten after it ran."""
    x = torch.randn(side, side, device=device)
    for _ in range(30):
        x = x @ x.T / side
    bufs = [torch.empty(3, *hw, dtype=torch.uint8, device=device) for _ in range(n)]
    for b in bufs:
        b.fill_(7)
    del bufs


def corruption(ctx: Ctx) -> dict:
    """Decoded images differing from PIL's (mean above 3 levels), per decoder; the project's must have none."""
    z = ctx.sizes
    rng = np.random.default_rng(0)
    files = [jpeg(rng, *z.corruption_hw) for _ in range(z.corruption_images)]
    enc = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
    refs = [pil_rgb(f) for f in files]
    decoders = {"barlowtwins decode_jpegs": decode_jpegs}
    if decode_jpeg is not None:
        decoders = {"torchvision on the training stream":
                    lambda e, d: list(decode_jpeg(e, mode=ImageReadMode.RGB, device=d)), **decoders}
    busy = ctx.device.type == "cuda" and z.busy_side > 0
    differ = {}
    for name, decode in decoders.items():
        _sync(ctx.device)
        if busy:
            _busy_stream(ctx.device, z.busy_side, z.corruption_images, z.corruption_hw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = decode(enc, ctx.device)
        _sync(ctx.device)
        differ[name] = sum(float((img.cpu().int() - r.int()).abs().float().mean()) > 3 for img, r in zip(images, refs))
        print(f"corruption: {name}: {differ[name]} of {len(files)} decoded images differ from PIL")
    out = {"images": len(files), "busy_stream": busy, "differ_from_pil": differ}
    if differ["barlowtwins decode_jpegs"]:
        raise CheckFailed(f"decode_jpegs returned {differ['barlowtwins decode_jpegs']} corrupt images", out)
    return out


@contextmanager
def _decode_audit(ctx: Ctx, counted: list):
    """The decode under sync debug mode "warn" (CUDA), its sync warnings appended to ``counted``; rehearsing,
    nothing (the CPU decoder has no stream to drain)."""
    if ctx.device.type != "cuda":
        yield
        return
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode(0)
    counted.append(sum("synchroniz" in str(x.message) for x in w))


@contextmanager
def _ops_audit(ctx: Ctx, audit: HostSyncAudit | None):
    """Any host sync in the block raises: CUDA's sync debug mode "error", or the rehearsal's `HostSyncAudit`."""
    if audit is not None:
        with audit:
            yield
        return
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(0)


def _batches(pipe, steps: int):
    """``steps`` batches of the pipeline, epoch after epoch."""
    done, epoch = 0, 0
    while done < steps:
        for batch, _, _ in pipe.epoch(epoch):
            yield batch
            done += 1
            if done >= steps:
                return
        epoch += 1


def sync_audit(ctx: Ctx) -> dict:
    """One warm-up step, then the crops and colour ops of ``audit_steps`` steps with any host sync an error."""
    z = ctx.sizes
    rng = np.random.default_rng(1)
    h, w = z.audit_hw
    ops_device = torch.device("meta") if ctx.rehearsal else ctx.device  # the views' tensors (see HostSyncAudit)
    audit = HostSyncAudit() if ctx.rehearsal else None
    out = {"mode": "HostSyncAudit on meta tensors (rehearsal)" if ctx.rehearsal else "cuda sync debug mode 'error'",
           "warmup_steps": 1, "audited_steps": 0, "decode_sync_warnings": 0}
    counted: list[int] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = folder_of(Path(tmp), {f"{i}.jpg": jpeg(rng, h + i % 50, w - i % 70) for i in range(z.audit_files)})
        cfg = augment_config(z.view)
        pipe = build_pipeline(build_dataset("folder", root, "train"), cfg, batch_size=z.audit_batch, seed=0,
                              device=ctx.device, data_path="device", workers=z.audit_workers)
        try:
            if pipe.kind != "device":
                raise CheckFailed(f"the device path fell back to the {pipe.kind} path", out)
            for step, batch in enumerate(_batches(pipe, z.audit_steps + 1)):
                with _decode_audit(ctx, counted):
                    images = pipe.decode(batch)
                heights = np.array([img.shape[1] for img in images])
                widths = np.array([img.shape[2] for img in images])
                params = [view_params(cfg, v, 0, step, batch["position"].numpy(), heights, widths) for v in (0, 1)]
                images = [img.to(ops_device) for img in images]
                try:
                    with _ops_audit(ctx, audit) if step > 0 else nullcontext():  # step 0 builds the constants
                        for p in params:
                            pipe.batch_views.finish(run_ops(OPS, images, p, cfg))
                except Exception as e:
                    out["decode_sync_warnings"] = sum(counted)
                    last = (str(e).strip().splitlines() or [""])[-1]
                    raise CheckFailed(f"step {step}: {type(e).__name__}: {last}"[:300], out) from e
                out["audited_steps"] = step
        finally:
            pipe.close()
    out["decode_sync_warnings"] = sum(counted)
    if audit is not None:
        out["host_to_device_copies_per_step"] = round(audit.host_to_device / max(1, out["audited_steps"]), 1)
    print(f"host syncs: crops and colour ops of {out['audited_steps']} steps after {out['warmup_steps']} warm-up "
          f"step ran under {out['mode']}; the decodes warned {out['decode_sync_warnings']} times")
    return out


@contextmanager
def _pixel_cap(scale: int):
    """PIL's pixel cap divided by ``scale`` squared (the rehearsal's small odd files meet it as the real ones do)."""
    cap = Image.MAX_IMAGE_PIXELS
    if cap and scale > 1:
        Image.MAX_IMAGE_PIXELS = cap // (scale * scale)
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = cap


def odd_files(ctx: Ctx) -> dict:
    """CMYK, progressive, truncated, big (under PIL's cap) and huge (over it) JPEGs through the device path."""
    k = ctx.sizes.odd_scale
    rng = np.random.default_rng(2)
    good = jpeg(rng, 200, 300)
    files = {"cmyk.jpg": jpeg(rng, 200, 300, "CMYK"), "progressive.jpg": jpeg(rng, 200, 300, progressive=True),
             "truncated.jpg": good[: len(good) // 3], "big-under-cap.jpg": jpeg(rng, 7000 // k, 12000 // k),
             "huge-over-cap.jpg": jpeg(rng, 12000 // k, 12000 // k), "good.jpg": good}
    out = {}
    with tempfile.TemporaryDirectory() as tmp, _pixel_cap(k):
        ds = build_dataset("folder", folder_of(Path(tmp), files), "train")
        cfg = augment_config(ctx.sizes.view)
        pipe = build_pipeline(ds, cfg, batch_size=len(files), seed=0, device=ctx.device, data_path="device",
                              workers=0)
        try:
            batch, _, _ = next(iter(pipe.epoch(0)))
            images = pipe.decode(batch)
        finally:
            pipe.close()
        boxes = torch.tensor([[0, 0, img.shape[1], img.shape[2]] for img in images], dtype=torch.float64)
        views = crop_resize_each(images, boxes, ctx.sizes.view)  # the whole image: a 12000 px side is pooled first
        _sync(ctx.device)
        for i, img, on_device in zip(batch["index"].tolist(), images, batch["encoded"]):
            path = pipe.files[i]
            name, why = Path(path).name, pipe.skipped.get(path, "")
            out[name] = {"shape": list(img.shape), "device_decoded": bool(on_device), "replaced": bool(why),
                         "reason": why}
            print(f"odd files: {name}: {tuple(img.shape)}, {'device decoder' if on_device else 'PIL in the worker'}"
                  f"{', replaced by the next readable file: ' + why if why else ''}")
    if not bool(torch.isfinite(views).all()):
        raise CheckFailed("views of the odd files are not finite", out)
    return out


def device_vs_cpu(ctx: Ctx) -> dict:
    """The device path's views (grouped crops) against the CPU's (per-sample crops) on the same parameters."""
    z = ctx.sizes
    rng = np.random.default_rng(3)
    cfg = augment_config(z.view)
    h0, w0 = z.vs_hw
    images = [pil_rgb(jpeg(rng, h0 + 7 * i, w0 - 5 * i)) for i in range(z.vs_images)]
    h = np.array([img.shape[1] for img in images])
    w = np.array([img.shape[2] for img in images])
    worst, mean = 0.0, 0.0
    for v in (0, 1):
        p = view_params(cfg, v, 0, 5, np.arange(len(images)), h, w)
        cpu = run_ops(OPS, images, p, cfg)
        dev = run_ops(_device_ops(ctx), [img.to(ctx.device) for img in images], p, cfg).cpu()
        worst = max(worst, float((cpu - dev).abs().max()))
        mean = max(mean, float((cpu - dev).abs().mean()))
    out = {"max_diff_levels": worst * 255, "mean_diff_levels": mean * 255, "limit_levels": MAX_DIFF_LEVELS}
    print(f"device vs cpu views: max difference {worst * 255:.3f} levels of 255 (mean {mean * 255:.4f})")
    if not worst * 255 <= MAX_DIFF_LEVELS:
        raise CheckFailed(f"device and CPU views differ by {worst * 255:.2f} levels (limit {MAX_DIFF_LEVELS})", out)
    return out


def crop_speed(ctx: Ctx) -> dict:
    """Milliseconds per view of the grouped and the per-sample crops, one image shape and all shapes differing."""
    z = ctx.sizes
    n, size = z.speed_crops, z.view
    cfg = augment_config(size)
    h0, w0 = z.speed_hw
    out = {}
    differ = [(h0 * 4 // 5 + i, w0 * 4 // 5 + i) for i in range(n)]  # 300 + i, 400 + i on the GPU
    for label, shapes in (("one shape", [(h0, w0)] * n), ("all shapes differ", differ)):
        images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=ctx.device) for h, w in shapes]
        p = view_params(cfg, 0, 0, 1, np.arange(n), np.array([h for h, _ in shapes]), np.array([w for _, w in shapes]))
        row = {}
        for name, grouped in (("grouped", True), ("per_sample", False)):
            _, row[name + "_call"] = crop_both_ways(images, p.box, size, grouped)  # warm-up
            _sync(ctx.device)
            t0 = time.perf_counter()
            for _ in range(z.speed_repeats):
                crop_both_ways(images, p.box, size, grouped)
            _sync(ctx.device)
            row[name + "_ms"] = round((time.perf_counter() - t0) / z.speed_repeats * 1000, 3)
        out[label] = row
        print(f"crop speed, {n} crops to {size} px, {label}: grouped {row['grouped_ms']} ms, "
              f"per sample {row['per_sample_ms']} ms per view")
    return out


CHECKS = {"self_test": self_test, "corruption": corruption, "sync_audit": sync_audit, "odd_files": odd_files,
          "device_vs_cpu": device_vs_cpu, "crop_speed": crop_speed}


# --------------------------------------------------------------------------------------------------------
# Running them: each isolated, the JSON rewritten after each
# --------------------------------------------------------------------------------------------------------

def injected_failures(value: str | None) -> set[str]:
    """The checks ``GPU_CHECK_FAIL`` names (comma-separated); an unknown name is a ValueError naming the known."""
    names = {v.strip() for v in (value or "").split(",") if v.strip()}
    unknown = names - set(CHECKS)
    if unknown:
        raise ValueError(f"GPU_CHECK_FAIL names unknown checks {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    return names


def run_one(name: str, ctx: Ctx, inject: set[str]) -> dict:
    """One check in its own try and time limit -> its section: status, seconds, figures, and the error if any."""
    start = time.perf_counter()
    try:
        with time_limit(LIMITS[name], f"check {name}"):
            if name in inject:
                raise RuntimeError(f"failure injected by GPU_CHECK_FAIL={','.join(sorted(inject))}")
            section = {"status": "ok", **CHECKS[name](ctx)}
    except CheckFailed as e:
        section = {"status": "failed", **e.figures, "error": str(e)}
    except Exception as e:  # noqa: BLE001 -- one failed check is reported, the others still run
        lines = str(e).strip().splitlines()
        section = {"status": "failed", "error": f"{type(e).__name__}: {lines[-1] if lines else ''}"[:300]}
    if section["status"] != "ok":
        print(f"{name}: FAILED {section['error']}")
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    section["seconds"] = round(time.perf_counter() - start, 2)
    return section


def write(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(result, indent=2) + "\n")


def run_checks(ctx: Ctx, output: Path, inject: set[str]) -> dict:
    """Every check in turn, the JSON at ``output`` rewritten before the first and after each one."""
    t0 = time.time()
    result = {"rehearsal": ctx.rehearsal, "environment": environment(ctx.device), "device": str(ctx.device),
              "complete": False, "checks": {name: {"status": "not run"} for name in CHECKS}}
    write(output, result)
    for name in CHECKS:
        result["checks"][name] = {"status": "running"}
        write(output, result)
        result["checks"][name] = run_one(name, ctx, inject)
        result["seconds"] = round(time.time() - t0, 1)
        write(output, result)
    result["complete"] = True
    write(output, result)
    print(f"\n{'check':16s} {'status':8s} {'seconds':>8s}  error")
    for name, sec in result["checks"].items():
        print(f"{name:16s} {sec['status']:8s} {sec['seconds']:8.1f}  {sec.get('error', '')}")
    print(f"gpu_check: results in {output} ({result['seconds']} s{', rehearsal' if ctx.rehearsal else ''})")
    return result


def summary(folder: Path, steps: list[str], rehearsal: bool) -> int:
    """``gpu-check-summary.json`` in ``folder``: each step's exit status (``NAME=STATUS``), the result files
    there, the failed steps; every result JSON marked with ``rehearsal``. Returns 1 when a step failed."""
    status = {}
    for item in steps:
        name, _, code = item.partition("=")
        rc = int(code) if code.lstrip("-").isdigit() else -1
        what = "ok" if rc == 0 else "timed out" if rc in (124, 137) else "failed"
        status[name] = {"exit_status": rc, "status": what}
    for name in ("gpu-check.json", "gpu-check-bench.json"):
        path = folder / name
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        write(path, {"rehearsal": rehearsal, **{k: v for k, v in data.items() if k != "rehearsal"}})
    failed = [n for n, s in status.items() if s["status"] != "ok"]
    device = torch.device("cuda", 0) if torch.cuda.is_available() and not rehearsal else torch.device("cpu")
    result = {"rehearsal": rehearsal, "environment": environment(device),
              "steps": status, "failed": failed,
              "files": {name: (folder / name).exists() for name in RESULT_FILES}}
    write(folder / "gpu-check-summary.json", result)
    print(f"\n{'step':10s} {'status':10s} exit")
    for name, s in status.items():
        print(f"{name:10s} {s['status']:10s} {s['exit_status']}")
    missing = [n for n, there in result["files"].items() if not there]
    print(f"gpu_check: {'failed steps: ' + ', '.join(failed) if failed else 'every step passed'}"
          f"{'; missing files: ' + ', '.join(missing) if missing else ''}")
    return 1 if failed else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--output", default="benchmarks/results/gpu-check.json")
    ap.add_argument("--rehearse", action="store_true", help="every check on the CPU at small sizes")
    ap.add_argument("--summary", default=None, metavar="DIR", help="write DIR/gpu-check-summary.json and stop")
    ap.add_argument("--step", nargs="*", default=[], metavar="NAME=STATUS", help="the steps' exit statuses")
    args = ap.parse_args(argv)
    if args.summary:
        return summary(Path(args.summary), args.step, args.rehearse)
    if not args.rehearse and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    try:
        inject = injected_failures(os.environ.get("GPU_CHECK_FAIL"))
    except ValueError as e:
        print(f"gpu_check: {e}", file=sys.stderr)
        return 2
    ctx = Ctx(torch.device("cpu"), REHEARSAL, True) if args.rehearse else Ctx(torch.device("cuda", 0), GPU, False)
    result = run_checks(ctx, Path(args.output), inject)
    return 0 if all(s["status"] == "ok" for s in result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
