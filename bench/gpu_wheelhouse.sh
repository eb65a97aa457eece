#!/usr/bin/env bash
# The wheels a bare GPU machine needs to run bench/gpu_check.sh, built here, into DIR:
#
#   bash bench/gpu_wheelhouse.sh DIR
#
# The GPU machine has CPython 3.12 with CUDA torch, transformers, tensorboard, sentencepiece,
# tiktoken and tokenizers (with what they need: numpy, packaging, tqdm, ...), and no network,
# no deepspeed and no megatron-core. DIR gets, for CPython 3.12 manylinux x86_64:
# - megatron-core 0.16.1 (it carries its compiled helpers);
# - deepspeed 0.19.8, a wheel built here from its sdist with no ops prebuilt (the runs use
#   torch's AdamW, and DeepSpeed builds nothing else they need);
# - deepspeed's own dependencies that the image does not have, at the versions this machine's
#   .venv runs (pydantic and pydantic-core must match each other);
# - a wheel of this project.
# No wheel brings torch, and DIR stays under 60 MiB (both checked). On the GPU machine:
#   bash bench/gpu_check.sh --wheelhouse DIR
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bash bench/gpu_wheelhouse.sh DIR}
PYTHON=${PYTHON:-.venv/bin/python}
LIMIT_MIB=60
mkdir -p "$DIR"

# deepspeed's dependencies the image lacks, pinned to what runs here.
EXTRA=(einops hjson msgpack ninja psutil py-cpuinfo pydantic pydantic-core annotated-types typing-inspection
       typing-extensions)
PINNED=()
for name in "${EXTRA[@]}"; do
    version=$("$PYTHON" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name")
    PINNED+=("$name==$version")
done
PLATFORM=(--python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none --only-binary=:all:
          --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_24_x86_64
          --platform manylinux_2_28_x86_64 --platform any)
"$PYTHON" -m pip download --quiet --no-deps "${PLATFORM[@]}" -d "$DIR" megatron-core==0.16.1 "${PINNED[@]}"
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIR" deepspeed==0.19.8
"$PYTHON" -m pip wheel --quiet --no-deps --no-build-isolation -w "$DIR" .

if ls "$DIR" | grep -Eiq '^(torch|nvidia|triton)[-_]'; then
    echo "error: a wheel in $DIR brings torch or CUDA libraries: $(ls "$DIR" | grep -Ei '^(torch|nvidia|triton)[-_]')" >&2
    exit 1
fi
size_kib=$(du -sk "$DIR" | cut -f1)
if (( size_kib > LIMIT_MIB * 1024 )); then
    echo "error: $DIR is $((size_kib / 1024)) MiB, over the $LIMIT_MIB MiB that travels to the GPU machine" >&2
    exit 1
fi
echo "$DIR: $(ls "$DIR"/*.whl | wc -l) wheels, $((size_kib / 1024)) MiB"
