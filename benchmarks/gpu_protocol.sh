#!/usr/bin/env bash
# The GPU figures in one command that fits a lent GPU machine's 10-minute command limit (the parts' time limits
# add up to 530 s at the default BUDGET, under 9 minutes):
#   1. steps-small (at most 50 s): the training-step time of the small-stem ResNet-18 at full width, batch 512;
#   2. steps-paper (at most 80 s): the same for the paper's ResNet-50 + 8192 projector at 224 px, batch 256
#      (one process; two when two GPUs are visible);
#   3. protocol (at most BUDGET minutes + 100 s): the Fashion-MNIST GPU protocol (that ResNet-18, batch 512,
#      one seed) with the random-init and raw-pixel baselines, BUDGET minutes of pretraining (default 5).
# Each part runs under its own time limit and keeps going after a failure of another; the script ends with each
# part's status and exits 1 when any failed. Figures go to benchmarks/RESULTS.md and benchmarks/results/, the
# console to benchmarks/results/gpu-protocol.log (LOG); when OUT is set (the device tool's folder) they are
# copied there after every part.
#
#   BUDGET=5 DATA=data/fashion-mnist bash benchmarks/gpu_protocol.sh
#
# The data: DATA is a folder holding Fashion-MNIST's four IDX files. data/ is git-ignored, so the device tool
# does not send it unless asked: here, before the call,
#     mkdir -p data/fashion-mnist && cp /usr/share/datasets/fashion-mnist/* data/fashion-mnist/
# then call the tool with carry=["data/fashion-mnist"] (it sends the working tree plus up to 8 git-ignored paths
# named in carry). Runs from the source tree (PYTHONPATH=src) with the machine's own PyTorch: nothing is
# installed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
BUDGET=${BUDGET:-5}
DATA=${DATA:-data/fashion-mnist}
LOG=${LOG:-benchmarks/results/gpu-protocol.log}
SMALL_LIMIT=${SMALL_LIMIT:-50} PAPER_LIMIT=${PAPER_LIMIT:-80}  # seconds
PROTOCOL_LIMIT=${PROTOCOL_LIMIT:-$(awk -v b="$BUDGET" 'BEGIN { printf "%d", b * 60 + 100 }')}
mkdir -p "$(dirname "$LOG")" || exit 2
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE=$!

TOTAL=$((SMALL_LIMIT + PAPER_LIMIT + PROTOCOL_LIMIT))
echo "gpu_protocol $(date -u +%Y-%m-%dT%H:%M:%SZ): time limits ${SMALL_LIMIT} + ${PAPER_LIMIT} + ${PROTOCOL_LIMIT}" \
     "= ${TOTAL} s"
if [ "$TOTAL" -gt 540 ]; then
    echo "warning: the parts may take ${TOTAL} s, over the 9 minutes that fit one 10-minute command; lower BUDGET"
fi

publish() {  # the figures so far and the log, to OUT
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT" || return 0
    cp -f benchmarks/RESULTS.md "$LOG" "$OUT/" 2>/dev/null
    for f in benchmarks/results/*gpu-protocol.json; do [ -f "$f" ] && cp -f "$f" "$OUT/"; done
    return 0
}

PARTS=()
part() {  # part NAME LIMIT COMMAND...: run it under its time limit, note its status, publish
    local name=$1 limit=$2 rc=0
    shift 2
    echo "== $name: at most ${limit} s =="
    timeout -k 10 "$limit" "$@" || rc=$?
    local what="ok"
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then what="timed out"; elif [ "$rc" -ne 0 ]; then what="failed"; fi
    echo "== $name: $what (exit status $rc) =="
    PARTS+=("$name:$what:$rc")
    publish
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)" || true
part steps-small "$SMALL_LIMIT" "$PY" benchmarks/ddp_step_time.py --device cuda --stem small --width 64 \
    --batch-size 512
part steps-paper "$PAPER_LIMIT" "$PY" benchmarks/ddp_step_time.py --device cuda --backbone resnet50 \
    --stem standard --width 0 --image-size 224 --batch-size 256 --projector 8192-8192-8192
if [ "$(find "$DATA" -maxdepth 1 -name '*-ubyte*' 2>/dev/null | wc -l)" -ge 4 ]; then
    part protocol "$PROTOCOL_LIMIT" "$PY" benchmarks/fashion_mnist.py --budget-minutes "$BUDGET" --device cuda \
        --seeds 0 --data-dir "$DATA" --baselines random pixels --set stem=small width=64 batch_size=512 \
        --label "Fashion-MNIST GPU protocol"
else
    echo "protocol: no Fashion-MNIST IDX files in $DATA; copy them there and carry the folder (see the top of" \
         "this script)"
    PARTS+=("protocol:no data:-")
fi

status=0
echo
printf '%-12s %-10s %s\n' part status exit
for p in "${PARTS[@]}"; do
    IFS=: read -r name what rc <<<"$p"
    printf '%-12s %-10s %s\n' "$name" "$what" "$rc"
    [ "$what" = ok ] || status=1
done
failed=$(for p in "${PARTS[@]}"; do case "$p" in *:ok:*) ;; *) echo "${p%%:*}" ;; esac; done | paste -sd, -)
echo "gpu_protocol: ${failed:+failed: }${failed:-every part passed}"
exec >&- 2>&-
wait "$TEE" 2>/dev/null || true
publish
exit "$status"
