#!/usr/bin/env bash
# The one script to run on a machine with one CUDA GPU: bf16 throughput and MFU, peak memory
# against the estimate, fused against unfused attention, DGA overhead (bench/gpu_check.py).
#   bash bench/gpu_check.sh [--peak-tflops 989]     # GPU
#   bash bench/gpu_check.sh --cpu                   # reduced mode on CPU (in the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python )}
exec "$PYTHON" bench/gpu_check.py "$@"
