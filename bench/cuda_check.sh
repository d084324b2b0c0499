#!/usr/bin/env bash
# The GPU half of issue 4 ("Speed"), as one script for a machine with one CUDA GPU (H100 intended).
# About 10-15 minutes, compiles included: the CUDA tests (capture, no host sync, fast vs eager),
# then the three target benchmarks. Figures go to docs/benchmarks/cuda/*.json (commit them);
# copy the numbers into docs/BENCHMARKS.md.
#
#   bash bench/cuda_check.sh            # everything
#   bash bench/cuda_check.sh tests      # only the tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
mkdir -p docs/benchmarks/cuda
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. Tests: the fast step is captured, never syncs, and agrees with eager within bf16 tolerance.
$PY -m pytest tests/test_speed.py -q -p no:cacheprovider -k cuda

[ "${1:-all}" = tests ] && exit 0

# 2. Targets: tf-dcgan-mnist >=5x (50 epochs <=20 s, compile <=60 s), seed001 (batch 32) >=5x,
#    dcgan 64x64 batch 128 >=3x. Without MNIST/CIFAR on disk the bench uses random images of the
#    recipe's shape (the step's cost does not depend on the pixels).
$PY bench/speed.py --recipe tf-dcgan-mnist --device cuda --steps 200 --rounds 3 --speed fast,eager \
    --json docs/benchmarks/cuda/cuda-tf-dcgan-mnist.json
$PY bench/speed.py --recipe seed001-dcgan-mnist --device cuda --steps 500 --rounds 3 --speed fast,eager \
    --json docs/benchmarks/cuda/cuda-seed001-dcgan-mnist.json
$PY bench/speed.py --recipe dcgan --device cuda --steps 100 --rounds 3 --speed fast,eager \
    --json docs/benchmarks/cuda/cuda-dcgan.json
# Which feature buys what (optional, same card): no compile, no graphs, no bf16.
$PY bench/speed.py --recipe tf-dcgan-mnist --device cuda --steps 200 --rounds 3 \
    --speed fast,fast+no_compile,fast+no_cudagraphs,fast+no_bf16 --only ganforge \
    --json docs/benchmarks/cuda/cuda-tf-dcgan-mnist-features.json
# Same quality: fast (bf16, compile, graphs) vs eager by FID, three seeds each (a few minutes).
$PY bench/quality.py --recipe default --data mnist5k --device cuda --steps 2000 --seeds 0 1 2 \
    --json docs/benchmarks/cuda/cuda-quality-default.json
