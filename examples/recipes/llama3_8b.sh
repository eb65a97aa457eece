#!/usr/bin/env bash
# A Llama-3-8B-shaped model specialised by DGA, on 4 nodes of 8 GPUs (80 GB each).
#
#   HOSTFILE=launch/hostfile bash examples/recipes/llama3_8b.sh     # train (run on the first node)
#   bash examples/recipes/llama3_8b.sh --estimate                    # memory per GPU, no GPU needed
#
# Shape: 32 layers, hidden 4096, 32 heads with 8 key/value groups, SwiGLU 14336, RMSNorm, RoPE
# (base 500000), no biases, untied output layer, 128256-token vocabulary, 8192-token sequences.
# Layout: TP = 2 inside a node with sequence parallelism, PP = 1, DP = 16 with ZeRO-1; 256 x 8192
# = 2M tokens per batch (micro batch 1, 16 accumulation steps); bf16; selective recompute.
#
# Memory per GPU (python tools/estimate_memory.py, the --estimate line below):
#   parameters 7.48 GiB, gradients 22.44 GiB (bf16, and the fp32 buffers they accumulate in, as
#   Megatron's main_grad), optimizer 2.80 GiB, activations 18.03 GiB, backward 0.56 GiB, logits
#   2.94 GiB: total 54.25 GiB for a training step, plus 1-3 GiB of CUDA context and NCCL.
# A DGA update (every 50 iterations) holds 37.47 GiB above the 32.72 GiB kept between steps: the
#   fp32 specific direction (15.0 GiB), one parameter's gradient and one probe micro batch, whose
#   activations are a training micro batch's. The peak with DGA on, 70.19 GiB, is the update's.
# Without sequence parallelism the activations would take 23.06 GiB.
# Selective recompute saves nothing more here: the fused SDPA kernel keeps no attention scores.
set -euo pipefail
cd "$(dirname "$0")/../.."
RECIPE_GPUS=32  # 4 nodes x 8 GPUs: what --estimate reads (not torchrun's WORLD_SIZE)
FLAGS=(
    --domains-manifest data/domains.json
    --tokenizer-type HuggingFaceTokenizer --tokenizer-model tokenizer/llama3.json --vocab-size 128256
    --num-layers 32 --hidden-size 4096 --num-attention-heads 32 --group-query-attention --num-query-groups 8
    --ffn-hidden-size 14336 --swiglu --normalization RMSNorm --position-embedding-type rope --rotary-base 500000
    --disable-bias-linear --untie-embeddings-and-output-weights --seq-length 8192 --layernorm-epsilon 1e-5
    --hidden-dropout 0 --attention-dropout 0
    --tensor-model-parallel-size 2 --pipeline-model-parallel-size 1 --sequence-parallel --zero-stage 1
    --micro-batch-size 1 --global-batch-size 256 --bf16 --recompute-granularity selective
    --train-iters 100000 --lr 3e-4 --min-lr 3e-5 --lr-warmup-iters 2000 --lr-decay-style cosine
    --weight-decay 0.1 --clip-grad 1.0
    --mixing dga --specific-data-path data/specific_text_document
    --specific-valid-data-path data/specific_valid_text_document --dga-update-interval 50
    --save checkpoints/llama3-8b --load checkpoints/llama3-8b --save-interval 1000 --exit-signal-handler
    --eval-interval 1000 --eval-iters 10 --log-interval 10
    --tensorboard-dir runs/llama3-8b/tb --metrics-file runs/llama3-8b/metrics.jsonl
)
source examples/recipes/launch.sh
