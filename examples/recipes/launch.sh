# Sourced by the recipes after they set FLAGS and RECIPE_GPUS: `--estimate` prints the memory
# per GPU (tools/estimate_memory.py); otherwise the deepspeed launcher starts the run from the
# first node of $HOSTFILE (default launch/hostfile), with any further flags appended.
if [[ "${1:-}" == "--estimate" ]]; then
    exec python tools/estimate_memory.py --world-size "$RECIPE_GPUS" "${FLAGS[@]}"
fi
# megatron-core overlaps tensor-parallel communication with compute through one queue per device
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
HOSTFILE=${HOSTFILE:-launch/hostfile}
MASTER_ADDR=${MASTER_ADDR:-$(grep -v '^#' "$HOSTFILE" | head -n1 | cut -d' ' -f1)}
exec deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "${MASTER_PORT:-29500}" \
    --module megatron_dga.pretrain "${FLAGS[@]}" "$@"
