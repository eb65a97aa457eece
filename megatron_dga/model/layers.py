"""The GPT as a list of layers, the form DeepSpeed's pipeline engine partitions into stages.

embedding -> transformer layer x N -> final norm -> LM head (tied to the embedding, or its own
vocabulary-parallel output layer with --untie-embeddings-and-output-weights).
Each layer takes one tensor and returns one tensor, so any cut between layers is a valid
pipeline-stage boundary. Activations are sequence-first, [s, b, h], as in megatron-core.

Every layer seeds the generator with its own `init_seed` before creating its weights, so its
initial values do not depend on which pipeline stage builds it, nor on what was built before.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from megatron.core import tensor_parallel
from megatron.core.models.backends import LocalSpecProvider
from megatron.core.models.common.embeddings.language_model_embedding import LanguageModelEmbedding
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_config import TransformerConfig

from megatron_dga.model.recompute import checkpoint
from megatron_dga.model.sequence_parallel import full_sequence_length, gather_for_lm_head

# Path of the shared weight inside EmbeddingPipe, for DeepSpeed's TiedLayerSpec.
TIED_WEIGHT_ATTR = "embedding.word_embeddings.weight"


@functools.lru_cache(maxsize=8)
def causal_mask(seq_length: int, device: torch.device) -> torch.Tensor:
    """[1, 1, s, s] boolean mask, True above the diagonal (megatron-core: True = masked).
    Built here because megatron-core's default causal mask is allocated on CUDA."""
    return torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool, device=device), 1)[None, None]


class EmbeddingPipe(MegatronModule):
    """Token embedding (vocabulary-parallel) plus learned positions: [b, s] ids -> [s, b, h].

    The same class, built without positions, serves as the LM head on the last pipeline
    stage, where DeepSpeed keeps its word embedding tied to the first stage's.
    """

    def __init__(self, config: TransformerConfig, vocab_size: int, max_sequence_length: int,
                 position_embedding_type: str, init_seed: int):
        super().__init__(config=config)
        torch.manual_seed(init_seed)
        self.embedding = LanguageModelEmbedding(
            config, vocab_size, max_sequence_length, position_embedding_type=position_embedding_type
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        position_ids = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        return self.embedding(tokens, position_ids.expand_as(tokens))


def lm_head(embedding: EmbeddingPipe, hidden: torch.Tensor) -> torch.Tensor:
    """Logits over this rank's vocabulary shard with the tied embedding weight: [s, b, v/tp].
    The copy to the TP region is the identity forward and an all-reduce of the input
    gradient backward, as in Megatron's parallel_lm_logits; under sequence parallelism it
    all-gathers the sequence instead."""
    hidden = gather_for_lm_head(hidden, embedding.config)
    return F.linear(hidden, embedding.embedding.word_embeddings.weight)


class OutputLayerPipe(MegatronModule):
    """The untied LM head: megatron-core's ColumnParallelLinear, [s, b, h] -> [s, b, v/tp], no
    bias, as Megatron's `output_layer`. Its input copy to the TP region is inside the layer."""

    def __init__(self, config: TransformerConfig, vocab_size: int, init_seed: int):
        super().__init__(config=config)
        torch.manual_seed(init_seed)
        self.output_layer = tensor_parallel.ColumnParallelLinear(
            config.hidden_size, vocab_size, config=config, init_method=config.init_method, bias=False,
            gather_output=False,
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits, _ = self.output_layer(hidden)
        return logits


class TransformerLayerPipe(MegatronModule):
    """One megatron-core TransformerLayer, [s, b, h] -> [s, b, h], with its causal mask."""

    def __init__(self, config: TransformerConfig, layer_spec: ModuleSpec, layer_number: int,
                 position_embedding_type: str, rotary_base: int, init_seed: int, recompute: bool = False,
                 rotary_percent: float = 1.0):
        super().__init__(config=config)
        self.recompute = recompute  # checkpoint this layer alone (--recompute-granularity full)
        torch.manual_seed(init_seed)
        self.layer = build_module(layer_spec, config=config, layer_number=layer_number)
        self.rotary = None
        if position_embedding_type == "rope":
            self.rotary = RotaryEmbedding(
                kv_channels=config.kv_channels, rotary_percent=rotary_percent, rotary_base=rotary_base,
                use_cpu_initialization=True,
            )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.recompute and torch.is_grad_enabled():
            return checkpoint(self._forward, hidden)
        return self._forward(hidden)

    def _forward(self, hidden: torch.Tensor) -> torch.Tensor:
        seq_length = full_sequence_length(hidden, self.config)
        rotary_pos_emb = None
        if self.rotary is not None:
            rotary_pos_emb = self.rotary(seq_length).to(hidden.device)
        # Under sequence parallelism each TP rank holds another part of the sequence, so its
        # dropouts draw from the TP rank's own stream (megatron-core's TransformerBlock does
        # the same); otherwise the replicated activations share the default stream.
        streams = tensor_parallel.get_cuda_rng_tracker().fork() if self.config.sequence_parallel else nullcontext()
        with streams:
            output, _ = self.layer(
                hidden, attention_mask=causal_mask(seq_length, hidden.device), rotary_pos_emb=rotary_pos_emb
            )
        return output


class FinalNormPipe(MegatronModule):
    """The normalization after the last transformer layer."""

    def __init__(self, config: TransformerConfig, norm_impl=None):
        super().__init__(config=config)
        if norm_impl is None:
            norm_impl = LocalSpecProvider().layer_norm(rms_norm=config.normalization == "RMSNorm")
        self.norm = build_module(norm_impl, config=config, hidden_size=config.hidden_size,
                                 eps=config.layernorm_epsilon)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(hidden)


def language_model_loss(logits: torch.Tensor, labels_and_mask, fused: bool = False) -> torch.Tensor:
    """Mean cross entropy over unmasked tokens, computed on vocabulary-parallel logits
    (megatron-core's fused kernel with --cross-entropy-loss-fusion).

    logits: [s, b, v/tp]; labels and loss mask: [b, s]."""
    labels, loss_mask = labels_and_mask
    if fused:
        from megatron.core import parallel_state
        from megatron.core.fusions.fused_cross_entropy import fused_vocab_parallel_cross_entropy

        losses = fused_vocab_parallel_cross_entropy(logits, labels.t().contiguous(),
                                                    parallel_state.get_tensor_model_parallel_group())
    else:
        losses = tensor_parallel.vocab_parallel_cross_entropy(logits.float(), labels.t().contiguous())
    mask = loss_mask.t().to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)
