#!/usr/bin/env bash
# Multi-node training with the deepspeed launcher.
#
# With ssh between nodes, run this once, on the first node listed in the hostfile:
#     HOSTFILE=launch/hostfile bash launch/deepspeed_multinode.sh
# Without ssh, run it on every node with its own NODE_RANK (0, 1, ...):
#     NO_SSH=1 NODE_RANK=0 MASTER_ADDR=node-01 HOSTFILE=launch/hostfile bash launch/deepspeed_multinode.sh
# Extra pretrain flags can be appended on the command line.
set -euo pipefail
# megatron-core orders tensor-parallel communication after the compute it overlaps only with
# one hardware queue per device (required for sequence parallelism; harmless otherwise).
export CUDA_DEVICE_MAX_CONNECTIONS=${CUDA_DEVICE_MAX_CONNECTIONS:-1}
HOSTFILE=${HOSTFILE:-launch/hostfile}
MASTER_ADDR=${MASTER_ADDR:-$(head -n1 <(grep -v '^#' "$HOSTFILE") | cut -d' ' -f1)}
MASTER_PORT=${MASTER_PORT:-29500}
LAUNCH=(deepspeed --hostfile "$HOSTFILE" --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT")
[[ -n "${NO_SSH:-}" ]] && LAUNCH+=(--no_ssh --node_rank "${NODE_RANK:?set NODE_RANK}")

"${LAUNCH[@]}" --module megatron_dga.pretrain \
    --domains-manifest data/domains.json \
    --tensor-model-parallel-size 2 --pipeline-model-parallel-size 2 --zero-stage 1 \
    --num-layers 24 --hidden-size 2048 --num-attention-heads 16 --seq-length 2048 \
    --micro-batch-size 4 --global-batch-size 512 --train-iters 20000 --bf16 \
    --lr 3e-4 --min-lr 3e-5 --lr-warmup-iters 500 --lr-decay-style cosine --weight-decay 0.1 --clip-grad 1.0 \
    --mixing dga --specific-data-path data/specific_text_document \
    --specific-valid-data-path data/specific_valid_text_document --dga-update-interval 20 \
    --save checkpoints/run --load checkpoints/run --save-interval 1000 \
    --eval-interval 500 --eval-iters 10 --log-interval 10 \
    --tensorboard-dir runs/tb --metrics-file runs/metrics.jsonl "$@"
