#!/bin/bash
# The paper's recipe on N nodes x 8 GPUs with PyTorch's own launcher. Run this same script on every node;
# HEAD is the address of any one of them (the c10d rendezvous lives there).
#
#   HEAD=10.0.0.1 NNODES=4 bash examples/torchrun_multinode.sh
set -euo pipefail
: "${HEAD:?set HEAD to the rendezvous host}"
NNODES=${NNODES:-4}
torchrun --nproc_per_node=8 --nnodes="$NNODES" --rdzv-backend=c10d --rdzv-endpoint="$HEAD:29500" \
    --rdzv-id=barlowtwins-imagenet \
    -m barlowtwins pretrain --preset imagenet --data-dir /datasets/imagenet --workers 9 \
    --out /shared/runs/imagenet-"$NNODES"x8
# then, on the same nodes, the evaluation runs sharded the same way:
# torchrun ... -m barlowtwins linear --checkpoint /shared/runs/imagenet-4x8 --dataset folder --data-dir /datasets/imagenet
