#!/usr/bin/env bash
# Detection transfer at CPU scale (a check that the whole path learns, not a benchmark of the method):
#   1. a synthetic-shapes data set in Pascal VOC layout (benchmarks/detection_shapes.py): 400 trainval + 100 test
#      images of 64 px, 1-3 coloured rectangles each on noise, every 5th object marked difficult;
#   2. Barlow Twins pretraining of a ResNet-18 of width 8 on the 400 trainval images, labels unused (7 minutes);
#   3. `barlowtwins detect` (Faster R-CNN C4, 300 iterations at batch 4) from that backbone and from random
#      init, side by side, one core each.
#
#   OUT=runs/detection-cpu bash benchmarks/detection_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
D=${OUT:-runs/detection-cpu}
$PY -c "
from pathlib import Path
from detection_shapes import make_voc_shapes
make_voc_shapes(Path('$D/voc'), n_trainval=400, n_test=100, size=64, max_objects=3, seed=0)
"
$PY -m barlowtwins pretrain --dataset images --data-dir "$D/voc/VOCdevkit/VOC2007/JPEGImages" --image-size 64 \
  --backbone resnet18 --width 8 --no-zero-init-residual --projector 512-512-512 --batch-size 64 --epochs 100 \
  --time-budget-minutes 7 --lr-weights 0.2 --eta 0.02 --crop-scale 0.3 1.0 --blur-p 0 0 --workers 0 \
  --no-channels-last --no-progress --out "$D/pretrain" > "$D/pretrain.log" 2>&1
COMMON=(--dataset voc --data-dir "$D/voc" --train-sets 2007-trainval --iterations 300 --batch-size 4
        --min-size 64 --max-size 96 --rois-per-image 64 --workers 0 --log-every 50)
$PY -m barlowtwins detect --checkpoint "$D/pretrain" "${COMMON[@]}" --output "$D/det-bt.json" > "$D/det-bt.log" 2>&1 &
$PY -m barlowtwins detect --random-init --backbone resnet18 --width 8 "${COMMON[@]}" \
  --output "$D/det-random.json" > "$D/det-random.log" 2>&1 &
wait
tail -n 1 "$D/det-bt.log" "$D/det-random.log"
