#!/usr/bin/env bash
# The device data path's checks for the day a GPU is lent, in one command (under 8 minutes on one H100/H200,
# nothing downloaded or installed: the machine's own torch/torchvision, PYTHONPATH=src):
#   1. checks (benchmarks/gpu_check.py, at most 230 s): the decoder self-test, the decode-corruption
#      reproduction, a host-sync audit of 50 steps after one warm-up step, odd JPEGs (CMYK, progressive,
#      truncated, 7k x 12k, 12k x 12k) through the device path, device views against CPU views, crop speed;
#   2. bench (`barlowtwins bench`, at most 200 s, each measurement at most 25 s + half): ResNet-50 at 224 px,
#      batch 128, on 800 synthetic JPEGs: model only (FLOPs, MFU), the cpu and the device data paths alone and
#      end to end (over model only), and the official per-image PIL pipeline (the paths over it);
#   3. summary: each step's exit status in gpu-check-summary.json.
# Each check and each measurement is isolated and its figures are written as soon as it ends, to
# benchmarks/results/ (RESULTS_DIR): gpu-check.json, gpu-check-bench.json, the bench's Markdown row in
# gpu-check-bench.md, gpu-check-summary.json, and this console in gpu-check.log; when OUT is set (the device
# tool's folder) all five are copied there after every step. The exit status is 1 when any step failed.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU host
#   bash benchmarks/gpu_check.sh --rehearse      # on any CPU host: every step at toy sizes, well under a minute
#
# --rehearse walks the same steps with the CUDA-only calls replaced by CPU counterparts (see gpu_check.py) and
# a toy network, into a temporary folder unless RESULTS_DIR is set; every JSON says "rehearsal": true.
# GPU_CHECK_FAIL=sync_audit (any check's name, comma-separated) makes that check fail on purpose.
# Without a CUDA GPU (and without --rehearse) it says so and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
REHEARSE=
case "${1:-}" in
    --rehearse) REHEARSE=--rehearse ;;
    "") ;;
    *) echo "gpu_check.sh: unknown argument '$1'; run it bare (GPU host) or with --rehearse (CPU host)" >&2
       exit 2 ;;
esac
if [ -z "$REHEARSE" ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: no CUDA GPU visible to PyTorch; nothing to check (run it on a GPU host)"
    exit 0
fi
if [ -n "$REHEARSE" ]; then
    RESULTS=${RESULTS_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/barlowtwins-gpu-check-rehearsal.XXXXXX")}
    JPEGS=${JPEGS:-${TMPDIR:-/tmp}/barlowtwins-gpu-check-rehearsal-jpegs}
    CHECKS_LIMIT=120 BENCH_LIMIT=180
    BENCH=(--device cpu --backbone resnet18 --width 8 --stem small --projector 32-32 --image-size 32
           --batch-size 8 --workers 1 --make-jpegs 24 --jpeg-size 40 60 --iters 2 --warmup 1 --time-limit 60)
else
    RESULTS=${RESULTS_DIR:-benchmarks/results}
    JPEGS=${JPEGS:-/tmp/barlowtwins-gpu-check-jpegs}
    CHECKS_LIMIT=230 BENCH_LIMIT=200
    BENCH=(--backbone resnet50 --image-size 224 --batch-size 128 --workers "${WORKERS:-$(nproc)}"
           --make-jpegs 800 --jpeg-size 350 500 --iters 8 --warmup 2 --time-limit 25)
fi
mkdir -p "$RESULTS" || exit 2
LOG="$RESULTS/gpu-check.log"
rm -f "$RESULTS/gpu-check.json" "$RESULTS/gpu-check-bench.json" "$RESULTS/gpu-check-summary.json"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1
TEE=$!

publish() {  # every result file there is, and the log so far, to OUT
    [ -n "${OUT:-}" ] || return 0
    mkdir -p "$OUT" && for f in gpu-check.json gpu-check-bench.json gpu-check-bench.md gpu-check-summary.json \
        gpu-check.log; do [ -f "$RESULTS/$f" ] && cp -f "$RESULTS/$f" "$OUT/"; done
    return 0
}

STEPS=()
step() {  # step NAME LIMIT COMMAND...: run it under its time limit, note its exit status, publish
    local name=$1 limit=$2 rc=0
    shift 2
    echo "== $name: at most ${limit} s =="
    timeout -k 10 "$limit" "$@" || rc=$?
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "$name: stopped at its time limit of ${limit} s"; fi
    echo "== $name: exit status $rc =="
    STEPS+=("$name=$rc")
    publish
}

echo "gpu_check ${REHEARSE:-on the GPU} $(date -u +%Y-%m-%dT%H:%M:%SZ), results in $RESULTS"
"$PY" -c "import platform, torch, torchvision; print('python', platform.python_version(), 'torch', \
torch.__version__, 'torchvision', torchvision.__version__)" || true
[ -n "$REHEARSE" ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
step checks "$CHECKS_LIMIT" "$PY" benchmarks/gpu_check.py $REHEARSE --output "$RESULTS/gpu-check.json"
step bench "$BENCH_LIMIT" "$PY" -m barlowtwins bench "${BENCH[@]}" --data-path cpu device --jpeg-dir "$JPEGS" \
    --repeats 1 --output "$RESULTS/gpu-check-bench.json" --results "$RESULTS/gpu-check-bench.md"
status=0
"$PY" benchmarks/gpu_check.py --summary "$RESULTS" $REHEARSE --step "${STEPS[@]}" || status=1
for s in "${STEPS[@]}"; do [ "${s#*=}" = 0 ] || status=1; done
echo "gpu_check: exit status $status"
exec >&- 2>&-  # the log is whole once tee has read everything
wait "$TEE" 2>/dev/null || true
publish
exit "$status"
