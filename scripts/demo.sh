#!/usr/bin/env bash
# The main job: set up, pretrain Barlow Twins on Fashion-MNIST on the CPU, then evaluate the backbone
# (weighted kNN and the fast linear probe) against the same network at random initialisation.
# Extra arguments go to `barlowtwins pretrain` (e.g. --time-budget-minutes 2 for a quicker look).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/setup.sh --with-data
RUN=${RUN:-runs/fashion-mnist}
barlowtwins pretrain --preset fashion-mnist --out "$RUN" "$@"
barlowtwins knn --checkpoint "$RUN" --compare-random
barlowtwins linear --checkpoint "$RUN"
barlowtwins linear --checkpoint "$RUN" --random-init
barlowtwins results "$RUN"
