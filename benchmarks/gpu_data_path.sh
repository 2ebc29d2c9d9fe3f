#!/usr/bin/env bash
# The data-path figures on a GPU host in one command that fits a 10-minute limit: the paper's network
# (ResNet-50, projector 8192-8192-8192, bf16) at 224 px, batch 256, from a folder of 2000 synthetic JPEGs
# (350-500 px, quality 90): model only (MFU), each data path alone and end to end, and the official per-image
# PIL pipeline with the same loader workers.
#
#   WORKERS=16 bash benchmarks/gpu_data_path.sh
#
# Runs from the source tree (PYTHONPATH=src) with the machine's own PyTorch. The row goes to
# benchmarks/RESULTS.md and the JSON to benchmarks/results/; when OUT is set both are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
WORKERS=${WORKERS:-$(nproc)}
JPEGS=${JPEGS:-/tmp/barlowtwins-bench-jpegs}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -m barlowtwins bench --backbone resnet50 --projector 8192-8192-8192 --image-size 224 --batch-size 256 \
    --data-path cpu device --workers "$WORKERS" --make-jpegs 2000 --jpeg-size 350 500 --jpeg-dir "$JPEGS" \
    --iters 12 --warmup 3 --repeats 2 --output benchmarks/results/bench-gpu-224.json \
    --results benchmarks/RESULTS.md
if [ -n "${OUT:-}" ]; then
    cp benchmarks/RESULTS.md benchmarks/results/bench-gpu-224.json "$OUT/"
fi
