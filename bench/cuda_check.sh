#!/usr/bin/env bash
# Every GPU check of the project as one script for a machine with one CUDA GPU, in under 8 minutes.
# Steps run most-wanted first, each under its own time cap and all under one overall budget
# (BUDGET seconds, default 450): a step that fails or runs out of time is reported and the next one
# still runs. Figures go to docs/benchmarks/cuda/*.json (commit them; copy the numbers into
# docs/BENCHMARKS.md and docs/DETECTION.md). The log of each step is docs/benchmarks/cuda/STEP.log.
#
#   bash bench/cuda_check.sh            # tests, detector speed, the three GAN speed targets
#   bash bench/cuda_check.sh tests      # only the CUDA tests
#   bash bench/cuda_check.sh extra      # the optional feature ablation and the fast-vs-eager FID
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=docs/benchmarks/cuda
BUDGET=${BUDGET:-450}
mkdir -p "$OUT"
START=$SECONDS
FAILED=()

# step NAME CAP_SECONDS COMMAND...: run COMMAND under min(CAP, what is left of BUDGET)
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if [ "$left" -lt 20 ]; then
        echo "== $name: skipped, the ${BUDGET}s budget is spent"
        FAILED+=("$name (skipped)")
        return
    fi
    [ "$cap" -gt "$left" ] && cap=$left
    echo "== $name (at most ${cap}s)"
    local t0=$SECONDS
    timeout --kill-after=10 "$cap" "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: rc $rc in $((SECONDS - t0))s"
    [ "$rc" -eq 0 ] || FAILED+=("$name (rc $rc)")
}

MODE=${1:-all}
case "$MODE" in all | tests | extra) ;; *) echo "usage: bash bench/cuda_check.sh [all|tests|extra]" >&2; exit 2 ;; esac
if ! $PY -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "cuda_check: torch sees no CUDA GPU here; run it on a machine with one (after make .venv/.installed)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"

if [ "$MODE" = all ] || [ "$MODE" = tests ]; then
    # Captured, no host sync (sync debug mode "error"), bf16 agreement; the detector's graph replay.
    step tests 150 $PY -m pytest tests/speed/test_speed.py tests/detect/test_detect_speed.py -q \
        -p no:cacheprovider -k cuda
fi
if [ "$MODE" = all ]; then
    # Detector inference (issue 11): batch 1 and 64 at 448, yolov1 and fast-yolov1, beside eager.
    # Target: yolov1 >= 1,000 images/s at batch 1.
    step detect-speed 90 $PY bench/detect_speed.py --device cuda --out "$OUT/detect-speed.json"
    # GAN step targets: tf-dcgan-mnist >= 5x (50 epochs <= 20 s, compile <= 60 s), seed001
    # (batch 32) >= 5x, dcgan 64x64 batch 128 >= 3x. Without MNIST/CIFAR on disk the bench uses
    # random images of the recipe's shape (the step's cost does not depend on the pixels).
    step tf-dcgan-mnist 120 $PY bench/speed.py --recipe tf-dcgan-mnist --device cuda --steps 200 \
        --rounds 3 --speed fast,eager --json "$OUT/cuda-tf-dcgan-mnist.json"
    step seed001-dcgan-mnist 90 $PY bench/speed.py --recipe seed001-dcgan-mnist --device cuda \
        --steps 500 --rounds 3 --speed fast,eager --json "$OUT/cuda-seed001-dcgan-mnist.json"
    step dcgan 90 $PY bench/speed.py --recipe dcgan --device cuda --steps 100 --rounds 3 \
        --speed fast,eager --json "$OUT/cuda-dcgan.json"
fi
if [ "$MODE" = extra ]; then
    # Which feature buys what (same card): no compile, no graphs, no bf16.
    step features 240 $PY bench/speed.py --recipe tf-dcgan-mnist --device cuda --steps 200 --rounds 3 \
        --speed fast,fast+no_compile,fast+no_cudagraphs,fast+no_bf16 --only ganforge \
        --json "$OUT/cuda-tf-dcgan-mnist-features.json"
    # Same quality: fast (bf16, compile, graphs) vs eager by FID, three seeds each.
    step quality 420 $PY bench/quality.py --recipe default --data mnist5k --device cuda --steps 2000 \
        --seeds 0 1 2 --json "$OUT/cuda-quality-default.json"
fi

echo "== done in $((SECONDS - START))s of a ${BUDGET}s budget"
if [ "${#FAILED[@]}" -gt 0 ]; then
    printf 'not passed: %s\n' "${FAILED[@]}"
    exit 1
fi
