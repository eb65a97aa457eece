#!/usr/bin/env bash
# The GPU kit on this machine, as on the GPU image: a Python 3.12 environment with torch 2.11
# and the image's packages (transformers, tensorboard, sentencepiece, tiktoken, tokenizers), no
# deepspeed and no megatron-core; the kit built by bench/gpu_wheelhouse.sh; then
# `bench/gpu_check.sh --wheelhouse KIT --cpu` with that python. Downloads about 3.5 GB (PyPI's
# torch 2.11 is its CUDA build, which runs on a CPU) the first time.
#
#   bash bench/kit_cpu_check.sh [WORK]        # WORK: default /tmp/megatron-dga-kit-check
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/megatron-dga-kit-check}
PYTHON312=${PYTHON312:-$(command -v python3.12)}
mkdir -p "$WORK"
if [[ ! -x "$WORK/venv/bin/python" ]]; then
    "$PYTHON312" -m venv "$WORK/venv"
    "$WORK/venv/bin/python" -m pip install --quiet --upgrade pip
    "$WORK/venv/bin/python" -m pip install --quiet torch==2.11.0
    echo "torch==2.11.0" > "$WORK/image-constraints.txt"
    "$WORK/venv/bin/python" -m pip install --quiet -c "$WORK/image-constraints.txt" transformers tensorboard \
        sentencepiece tiktoken tokenizers numpy
fi
rm -rf "$WORK/kit" "$WORK/target"
bash bench/gpu_wheelhouse.sh "$WORK/kit"
KIT_PYTHON="$WORK/venv/bin/python" KIT_TARGET="$WORK/target" \
    bash bench/gpu_check.sh --wheelhouse "$WORK/kit" --cpu --json "$WORK/gpu_check.json"
