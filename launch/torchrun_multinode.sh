#!/usr/bin/env bash
# Multi-node training with torchrun: run on every node, the same command, its own NODE_RANK.
#     NNODES=2 NODE_RANK=0 MASTER_ADDR=node-01 GPUS_PER_NODE=8 bash launch/torchrun_multinode.sh [pretrain flags]
set -euo pipefail
# megatron-core orders tensor-parallel communication after the compute it overlaps only with
# one hardware queue per device (required for sequence parallelism; harmless otherwise).
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
torchrun --nnodes "${NNODES:?}" --node_rank "${NODE_RANK:?}" --nproc_per_node "${GPUS_PER_NODE:-8}" \
    --master_addr "${MASTER_ADDR:?}" --master_port "${MASTER_PORT:-29500}" \
    -m megatron_dga.pretrain --domains-manifest data/domains.json "$@"
