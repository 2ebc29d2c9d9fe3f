#!/usr/bin/env bash
# The device data path's checks for the day a GPU is lent, in one command (under 8 minutes on one H100/H200,
# nothing downloaded): the decode-corruption reproduction, a host-sync audit of 50 steps, odd JPEGs (CMYK,
# progressive, truncated, 12k px) through the device path, device views against CPU views (all in
# gpu_check.py), then `barlowtwins bench` on synthetic JPEGs, figures to benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh
#
# Without a CUDA GPU it says so and exits 0. When OUT is set the results are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU visible to PyTorch; nothing to check (run it on a GPU host)"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
status=0
timeout 300 "$PY" benchmarks/gpu_check.py --output benchmarks/results/gpu-check.json || status=$?
WORKERS=${WORKERS:-$(nproc)}
timeout 240 "$PY" -m barlowtwins bench --backbone resnet50 --image-size 224 --batch-size 128 \
    --data-path cpu device --workers "$WORKERS" --make-jpegs 800 --jpeg-size 350 500 \
    --jpeg-dir /tmp/barlowtwins-gpu-check-jpegs --iters 8 --warmup 2 --repeats 1 \
    --output benchmarks/results/gpu-check-bench.json --results benchmarks/results/gpu-check-bench.md || status=$?
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu-check*.json benchmarks/results/gpu-check-bench.md "$OUT/" 2>/dev/null || true
fi
exit "$status"
