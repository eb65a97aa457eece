#!/usr/bin/env bash
# The one script to run on a machine with one CUDA GPU (bench/gpu_check.py: preflight, bf16
# throughput and MFU, a ~1B Llama shape with DGA and an exact resume, fused against unfused
# attention, fp16 DGA probes, DGA overhead; one summary table and a JSON file).
#   bash bench/gpu_check.sh --wheelhouse DIR [--peak-tflops 989]   # a bare GPU machine: installs DIR
#                                        # (bench/gpu_wheelhouse.sh) into a folder of its own and
#                                        # runs with the machine's python3 and torch
#   bash bench/gpu_check.sh [--peak-tflops 989]                     # a machine set up by `make install`
#   bash bench/gpu_check.sh --cpu                                   # reduced mode on CPU (in the test suite)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
ARGS=()
while (( $# )); do
    case "$1" in
        --wheelhouse)
            WHEELHOUSE=$(realpath "${2:?--wheelhouse needs a folder}")
            shift 2 ;;
        *)
            ARGS+=("$1")
            shift ;;
    esac
done
if [[ -n "${WHEELHOUSE:-}" ]]; then
    PYTHON=${KIT_PYTHON:-python3}  # the image's python, with its own (CUDA) torch
    TARGET=${KIT_TARGET:-${TMPDIR:-/tmp}/megatron-dga-kit}
    if [[ ! -f "$TARGET/.installed" ]]; then
        rm -rf "$TARGET"
        "$PYTHON" -m pip install --quiet --no-index --no-deps --target "$TARGET" "$WHEELHOUSE"/*.whl
        touch "$TARGET/.installed"
    fi
    # The working tree first (the code under test), then the kit's packages, then the image's.
    export PYTHONPATH="$PWD:$TARGET${PYTHONPATH:+:$PYTHONPATH}"
    export DS_BUILD_OPS=0
fi
exec "$PYTHON" bench/gpu_check.py ${ARGS[@]+"${ARGS[@]}"}
