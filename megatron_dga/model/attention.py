"""Core attention through torch's `scaled_dot_product_attention`.

A drop-in for megatron-core's `DotProductAttention` (the local spec's core attention: same
constructor and forward, [s, b, heads, head dim] in, [s, b, heads x head dim] out). torch
dispatches it to the flash or memory-efficient kernels on GPU (no [b, heads, s, s] score matrix
in memory) and to its fused math kernel on CPU. Causal masking is the kernel's own; grouped
query attention repeats each key/value head over its group, as megatron-core does. Dropout on
the attention probabilities runs inside megatron-core's model-parallel RNG fork, like the
unfused path's, so tensor-parallel ranks drop different heads.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.utils import divide


class SDPAttention(MegatronModule):
    def __init__(self, config: TransformerConfig, layer_number: int, attn_mask_type, attention_type: str,
                 attention_dropout: Optional[float] = None, softmax_scale: Optional[float] = None,
                 cp_comm_type=None, pg_collection=None):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("--attention-backend sdpa does not support context parallelism")
        tp = config.tensor_model_parallel_size
        self.heads = divide(config.num_attention_heads, tp)
        self.groups = divide(config.num_query_groups, tp)
        self.head_dim = divide(config.kv_channels * config.num_attention_heads, config.num_attention_heads)
        self.softmax_scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(self.head_dim)
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        if packed_seq_params is not None or attention_bias is not None:
            raise ValueError("--attention-backend sdpa: packed sequences and attention biases are not supported")
        if self.heads > self.groups:
            key = key.repeat_interleave(self.heads // self.groups, dim=2)
            value = value.repeat_interleave(self.heads // self.groups, dim=2)
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3) for t in (query, key, value))
        dropout = self.dropout if self.training else 0.0
        # Under sequence parallelism the whole layer already runs in that fork; a nested fork
        # of the same stream would replay its numbers.
        streams = nullcontext() if self.config.sequence_parallel else tensor_parallel.get_cuda_rng_tracker().fork()
        with streams:
            context = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True,
                                                     scale=self.softmax_scale)
        # [b, n, s, d] -> [s, b, n x d]
        return context.permute(2, 0, 1, 3).reshape(query.shape[0], query.shape[1], self.heads * self.head_dim)
