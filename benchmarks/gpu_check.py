"""The device data path's checks on a CUDA GPU, run by `gpu_check.sh` (nothing downloaded; a few minutes).

1. corruption: a busy stream whose queued kernels write freed tensors, then a batched decode of 200 JPEGs;
   decoded images that differ from PIL's are counted, for torchvision's decode on the training stream and
   for the project's ordered `decode_jpegs`;
2. host syncs: ``torch.cuda.set_sync_debug_mode("error")`` around the crops and colour ops of 50 device-path
   steps (the decode, which drains its side stream, under "warn" with the warnings counted);
3. odd files through the device path: CMYK, progressive, truncated, 7k x 12k (under PIL's pixel cap) and
   12k x 12k (over it) JPEGs;
4. device views against CPU views on the same parameters (the GPU's grouped crops against the CPU's per-sample
   ones);
5. crop speed: 256 crops of 375 x 500 images (one shape, as most of ImageNet) and of 256 different shapes, the
   grouped matmuls against one ``F.interpolate`` per crop, milliseconds per view.

Without CUDA it prints one line and exits 0. Results go to stdout and, as JSON, to ``--output``.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def jpeg(rng, h, w, mode="RGB", **save) -> bytes:
    img = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((w, h), Image.BICUBIC)
    buf = io.BytesIO()
    img.convert(mode).save(buf, format="JPEG", quality=90, **save)
    return buf.getvalue()


def pil_rgb(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).copy()).permute(2, 0, 1)


def corruption(device, n=200):
    from torchvision.io import ImageReadMode, decode_jpeg

    from barlowtwins.transforms.device import decode_jpegs

    rng = np.random.default_rng(0)
    files = [jpeg(rng, 480, 640) for _ in range(n)]
    enc = [torch.frombuffer(bytearray(f), dtype=torch.uint8) for f in files]
    refs = [pil_rgb(f) for f in files]
    raw = lambda e, d: list(decode_jpeg(e, mode=ImageReadMode.RGB, device=d))
    out = {}
    for name, decode in (("torchvision on the training stream", raw), ("barlowtwins decode_jpegs", decode_jpegs)):
        torch.cuda.synchronize(device)
        x = torch.randn(8192, 8192, device=device)
        for _ in range(30):  # about 0.1 s of queued work
            x = x @ x.T / 8192
        bufs = [torch.empty(3, 480, 640, dtype=torch.uint8, device=device) for _ in range(n)]
        for b in bufs:
            b.fill_(7)  # queued behind the matmuls: runs after a decode that ignores stream order
        del bufs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = decode(enc, device)
        torch.cuda.synchronize(device)
        bad = sum(float((img.cpu().int() - r.int()).abs().float().mean()) > 3 for img, r in zip(images, refs))
        out[name] = bad
        print(f"corruption: {name}: {bad} of {n} decoded images differ from PIL")
    return out


def folder_of(root: Path, files: dict) -> Path:
    d = root / "train" / "a"
    d.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (d / name).write_bytes(data)
    return root


def sync_audit(device, steps=50):
    from barlowtwins.data.datasets import build_dataset
    from barlowtwins.data.pipeline import build_pipeline
    from barlowtwins.transforms.device import OPS
    from barlowtwins.transforms.params import view_params
    from barlowtwins.transforms.spec import augment_config, run_ops

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        root = folder_of(Path(tmp), {f"{i}.jpg": jpeg(rng, 300 + i % 50, 400 - i % 70) for i in range(128)})
        cfg = augment_config(224)
        pipe = build_pipeline(build_dataset("folder", root, "train"), cfg, batch_size=32, seed=0, device=device,
                              data_path="device", workers=4)
        decode_warnings, step = 0, 0
        while step < steps:
            for batch, _, _ in pipe.epoch(step // len(pipe)):
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    torch.cuda.set_sync_debug_mode("warn")
                    images = pipe.decode(batch)
                    torch.cuda.set_sync_debug_mode(0)
                decode_warnings += sum("synchroniz" in str(x.message) for x in w)
                heights = np.array([img.shape[1] for img in images])
                widths = np.array([img.shape[2] for img in images])
                params = [view_params(cfg, v, 0, step, batch["position"].numpy(), heights, widths) for v in (0, 1)]
                torch.cuda.set_sync_debug_mode("error")  # any sync in the ops raises here
                try:
                    for p in params:
                        pipe.batch_views.finish(run_ops(OPS, images, p, cfg))
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                step += 1
                if step >= steps:
                    break
        pipe.close()
    print(f"host syncs: crops and colour ops of {steps} steps ran under sync debug mode 'error'; "
          f"the decodes warned {decode_warnings} times")
    return {"steps": steps, "decode_sync_warnings": decode_warnings}


def odd_files(device):
    from barlowtwins.data.datasets import build_dataset
    from barlowtwins.data.pipeline import _Bytes, _collate_bytes, build_pipeline
    from barlowtwins.transforms.spec import augment_config

    rng = np.random.default_rng(2)
    good = jpeg(rng, 200, 300)
    files = {"cmyk.jpg": jpeg(rng, 200, 300, "CMYK"), "progressive.jpg": jpeg(rng, 200, 300, progressive=True),
             "truncated.jpg": good[: len(good) // 3], "big-7kx12k.jpg": jpeg(rng, 7000, 12000),
             "huge-12kx12k.jpg": jpeg(rng, 12000, 12000), "good.jpg": good}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        ds = build_dataset("folder", folder_of(Path(tmp), files), "train")
        cfg = augment_config(224)
        pipe = build_pipeline(ds, cfg, batch_size=len(files), seed=0, device=device, data_path="device", workers=0)
        samples = _Bytes(pipe.files, cfg, 0, False)
        batch = _collate_bytes([samples[(i, 0, i)] for i in range(len(pipe.files))])
        pipe._note_skips(batch["skipped"])
        images = pipe.decode(batch)
        boxes = torch.tensor([[0, 0, img.shape[1], img.shape[2]] for img in images], dtype=torch.float64)
        from barlowtwins.transforms.device import crop_resize_each

        views = crop_resize_each(images, boxes, 224)  # the whole image: 12000 px -> 224 is pooled first
        torch.cuda.synchronize(device)
        for path, img, on_device in zip(pipe.files, images, batch["encoded"]):
            name, why = Path(path).name, pipe.skipped.get(path, "")
            out[name] = {"shape": list(img.shape), "device_decoded": bool(on_device), "replaced": bool(why),
                         "reason": why}
            print(f"odd files: {name}: {tuple(img.shape)}, {'nvJPEG' if on_device else 'PIL in the worker'}"
                  f"{', replaced by the next readable file: ' + why if why else ''}")
        assert torch.isfinite(views).all()
    return out


def device_vs_cpu(device):
    from barlowtwins.transforms.device import OPS
    from barlowtwins.transforms.params import view_params
    from barlowtwins.transforms.spec import augment_config, run_ops

    rng = np.random.default_rng(3)
    cfg = augment_config(224)
    images = [pil_rgb(jpeg(rng, 300 + 7 * i, 450 - 5 * i)) for i in range(32)]
    h = np.array([img.shape[1] for img in images])
    w = np.array([img.shape[2] for img in images])
    worst = 0.0
    for v in (0, 1):
        p = view_params(cfg, v, 0, 5, np.arange(32), h, w)
        cpu = run_ops(OPS, images, p, cfg)
        gpu = run_ops(OPS, [img.to(device) for img in images], p, cfg).cpu()
        worst = max(worst, float((cpu - gpu).abs().max()))
    print(f"device vs cpu views: max difference {worst * 255:.2f} levels of 255")
    return {"max_diff_levels": worst * 255}


def crop_speed(device, n=256, size=224, repeats=20):
    from barlowtwins.transforms.device import crop_resize
    from barlowtwins.transforms.params import view_params
    from barlowtwins.transforms.spec import augment_config

    cfg = augment_config(size)
    out = {}
    for label, shapes in (("one shape", [(375, 500)] * n), ("all shapes differ", [(300 + i, 400 + i) for i in range(n)])):
        images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=device) for h, w in shapes]
        p = view_params(cfg, 0, 0, 1, np.arange(n), np.array([h for h, _ in shapes]), np.array([w for _, w in shapes]))
        row = {}
        for name, grouped in (("grouped", True), ("per_sample", False)):
            crop_resize(images, p.box, size, grouped=grouped)  # warm-up
            torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            for _ in range(repeats):
                crop_resize(images, p.box, size, grouped=grouped)
            torch.cuda.synchronize(device)
            row[name + "_ms"] = round((time.perf_counter() - t0) / repeats * 1000, 2)
        out[label] = row
        print(f"crop speed, {n} crops to {size} px, {label}: grouped {row['grouped_ms']} ms, "
              f"per sample {row['per_sample_ms']} ms per view")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", default="benchmarks/results/gpu-check.json")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible to PyTorch; nothing to check (run it on a GPU host)")
        return 0
    device = torch.device("cuda", 0)
    t0 = time.time()
    from barlowtwins.transforms.device import check_device_decoder

    result = {"gpu": torch.cuda.get_device_name(device), "self_test": check_device_decoder(device) or "ok"}
    print(f"self-test: {result['self_test']}")
    for name, check in (("corruption", corruption), ("sync_audit", sync_audit), ("odd_files", odd_files),
                        ("device_vs_cpu", device_vs_cpu), ("crop_speed", crop_speed)):
        try:
            result[name] = check(device)
        except Exception as e:  # noqa: BLE001 -- one failed check is reported, the others still run
            result[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: FAILED {type(e).__name__}: {e}")
    result["seconds"] = round(time.time() - t0, 1)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2))
    print(f"gpu_check: results in {args.output} ({result['seconds']} s)")
    return 1 if any(isinstance(v, dict) and "error" in v for v in result.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
