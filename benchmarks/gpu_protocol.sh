#!/usr/bin/env bash
# The GPU figures in one command that fits a lent GPU machine's 10-minute command limit:
#   1. the Fashion-MNIST GPU protocol (small-stem ResNet-18 at full width, batch 512, one seed) with the
#      random-init and raw-pixel baselines, for BUDGET minutes of pretraining (default 6);
#   2. the training-step time of the same network at batch 512 and of the paper's ResNet-50 + 8192 projector
#      at 224 px, batch 256 (one process; two when two GPUs are visible).
#
#   BUDGET=6 DATA=data/fashion-mnist bash benchmarks/gpu_protocol.sh
#
# Runs from the source tree (PYTHONPATH=src) with the machine's own PyTorch, so nothing is installed. DATA is a
# folder holding Fashion-MNIST's four IDX files (copy /usr/share/datasets/fashion-mnist there: data/ is
# git-ignored, so carry it). Figures go to benchmarks/RESULTS.md and benchmarks/results/; when OUT is set they
# are copied there too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-6}
DATA=${DATA:-data/fashion-mnist}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
"$PY" benchmarks/fashion_mnist.py --budget-minutes "$BUDGET" --device cuda --seeds 0 --data-dir "$DATA" \
    --baselines random pixels --set stem=small width=64 batch_size=512 --label "Fashion-MNIST GPU protocol"
"$PY" benchmarks/ddp_step_time.py --device cuda --stem small --width 64 --batch-size 512
"$PY" benchmarks/ddp_step_time.py --device cuda --backbone resnet50 --stem standard --width 0 --image-size 224 \
    --batch-size 256 --projector 8192-8192-8192
if [ -n "${OUT:-}" ]; then
    cp benchmarks/RESULTS.md "$OUT/"
    cp benchmarks/results/*gpu-protocol.json "$OUT/" 2>/dev/null || true
fi
