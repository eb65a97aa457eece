#!/usr/bin/env bash
# A Llama-3-70B-shaped model specialised by DGA, on 8 nodes of 8 GPUs (80 GB each).
#
#   HOSTFILE=launch/hostfile bash examples/recipes/llama3_70b.sh     # train (run on the first node)
#   bash examples/recipes/llama3_70b.sh --estimate                    # memory per GPU, no GPU needed
#
# Shape: 80 layers, hidden 8192, 64 heads with 8 key/value groups, SwiGLU 28672, RMSNorm, RoPE
# (base 500000), no biases, untied output layer, 128256-token vocabulary, 8192-token sequences.
# Layout: TP = 8 inside a node with sequence parallelism, PP = 4 (20 layers per stage), DP = 2
# with ZeRO-1; 256 x 8192 = 2M tokens per batch (micro batch 1, 128 micro batches per pipeline
# per step); bf16; selective recompute. Sequence parallelism is what lets the activations fit
# without recomputing whole layers: without it they would take 66 GiB per GPU, and full
# recompute (--recompute-granularity full, 1.6 GiB) would cost a third more compute.
#
# Memory per GPU (python tools/estimate_memory.py, the --estimate line below):
#   parameters 4.23 GiB, gradients 12.69 GiB (bf16, and the fp32 buffers they accumulate in),
#   optimizer 12.69 GiB, activations 22.25 GiB, backward 0.28 GiB, logits 0.00 GiB (they are on
#   the last stage): total 52.14 GiB for a training step, plus 1-3 GiB of CUDA context and NCCL.
# A DGA update holds 14.79 GiB above the 29.62 GiB kept between steps (the fp32 specific
#   direction, 8.5 GiB, one parameter's gradient and one probe micro batch): the peak
#   with DGA on, 52.14 GiB, stays the training step's.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECIPE_GPUS=64  # 8 nodes x 8 GPUs: what --estimate reads (not torchrun's WORLD_SIZE)
FLAGS=(
    --domains-manifest data/domains.json
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model tokenizer/llama3.json --vocab-size 128256
    --num-layers 80 --hidden-size 8192 --num-attention-heads 64 --group-query-attention --num-query-groups 8
    --ffn-hidden-size 28672 --swiglu --normalization RMSNorm --position-embedding-type rope --rotary-base 500000
    --disable-bias-linear --untie-embeddings-and-output-weights --seq-length 8192 --layernorm-epsilon 1e-5
    --hidden-dropout 0 --attention-dropout 0
    --tensor-model-parallel-size 8 --pipeline-model-parallel-size 4 --sequence-parallel --zero-stage 1
    --micro-batch-size 1 --global-batch-size 256 --bf16 --recompute-granularity selective
    --train-iters 100000 --lr 3e-4 --min-lr 3e-5 --lr-warmup-iters 2000 --lr-decay-style cosine
    --weight-decay 0.1 --clip-grad 1.0
    --mixing dga --specific-data-path data/specific_text_document
    --specific-valid-data-path data/specific_valid_text_document --dga-update-interval 50
    --save checkpoints/llama3-70b --load checkpoints/llama3-70b --save-interval 1000 --exit-signal-handler
    --eval-interval 1000 --eval-iters 10 --log-interval 10
    --tensorboard-dir runs/llama3-70b/tb --metrics-file runs/llama3-70b/metrics.jsonl
)
source examples/recipes/launch.sh
