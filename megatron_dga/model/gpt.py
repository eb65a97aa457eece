"""Build the GPT: one layer list for every layout.

With pipeline parallelism the list goes to DeepSpeed's `PipelineModule`, which builds this
stage's slice and ties the embedding on the first stage to the LM head on the last. Without
it, `SequentialGPT` builds the whole list with the same names, so parameter names (and
checkpoint keys) are the same in both: `tied_modules.embed.*` and `<layer index>.*`.

Every layer seeds its initialisation with `seed + layer index`, so a layer's initial weights do
not depend on which stage builds it; with megatron-core's CPU initialisation (one full-size
master weight, then sliced) they do not depend on TP either. The model is built inside a fork
of the generators, leaving the run's dropout and data streams where they were.
"""

from __future__ import annotations

from functools import partial
from typing import List

import torch
from deepspeed.runtime.pipe.module import LayerSpec, PipelineModule, TiedLayerSpec
from megatron.core.models.backends import LocalSpecProvider
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

from megatron_dga.config import ModelConfig
from megatron_dga.model.layers import (
    TIED_WEIGHT_ATTR,
    EmbeddingPipe,
    FinalNormPipe,
    OutputLayerPipe,
    TransformerLayerPipe,
    language_model_loss,
    lm_head,
)
from megatron_dga.model.attention import SDPAttention
from megatron_dga.model.norms import ZeroCenteredTorchNorm
from megatron_dga.model.recompute import checkpoint, layer_recomputed_alone, uniform_group_size
from megatron_dga.model.sequence_parallel import (SequenceParallelGradients, sequence_parallel_norm,
                                                  sequence_parallel_spec)
from megatron_dga.model.transformer_config import build_transformer_config, use_transformer_engine
from megatron_dga.parallel.initialize import ParallelContext

TIED_KEY = "embed"
INIT_SEED_OFFSET = 7  # keeps per-layer init seeds apart from the data and dropout seeds


def _layer_spec_and_norm(model: ModelConfig, sequence_parallel: bool):
    if use_transformer_engine(model):
        from megatron.core.extensions.transformer_engine_spec_provider import TESpecProvider
        from megatron.core.models.gpt.gpt_layer_specs import (
            get_gpt_layer_with_transformer_engine_spec,
        )

        rms = model.normalization == "RMSNorm"
        return (get_gpt_layer_with_transformer_engine_spec(qk_layernorm=model.qk_layernorm),
                TESpecProvider().layer_norm(rms_norm=rms))
    spec = get_gpt_layer_local_spec(normalization=model.normalization, qk_layernorm=model.qk_layernorm)
    if model.attention_backend in ("auto", "sdpa"):
        spec.submodules.self_attention.submodules.core_attention = SDPAttention
    if model.apply_layernorm_1p:  # their own class, which also marks sequence-parallel parameters
        spec.submodules.input_layernorm = spec.submodules.pre_mlp_layernorm = ZeroCenteredTorchNorm
        return spec, ZeroCenteredTorchNorm
    if sequence_parallel:
        final_norm = LocalSpecProvider().layer_norm(rms_norm=model.normalization == "RMSNorm")
        return sequence_parallel_spec(spec), sequence_parallel_norm(final_norm)
    return spec, None


def gpt_layer_specs(model: ModelConfig, padded_vocab: int, tp: int, bf16: bool, fp16: bool,
                    init_seed: int, pp: int = 1, sequence_parallel: bool = False) -> List:
    """embedding, N transformer layers, final norm, LM head; layer i seeds with init_seed + i.

    The embedding is a TiedLayerSpec even when the head is untied (then it has one holder), so
    its parameter names are `tied_modules.embed.*` in every run shape."""
    config = build_transformer_config(model, tp, bf16, fp16, sequence_parallel=sequence_parallel)
    layer_spec, norm_impl = _layer_spec_and_norm(model, config.sequence_parallel)
    max_positions = model.max_position_embeddings or model.seq_length
    specs = [
        TiedLayerSpec(TIED_KEY, EmbeddingPipe, config, padded_vocab, max_positions,
                      model.position_embedding_type, init_seed, tied_weight_attr=TIED_WEIGHT_ATTR)
    ]
    specs += [
        LayerSpec(TransformerLayerPipe, config, layer_spec, i + 1, model.position_embedding_type,
                  model.rotary_base, init_seed + i + 1,
                  recompute=layer_recomputed_alone(model, i + 1, model.num_layers // pp),
                  rotary_percent=model.rotary_percent)
        for i in range(model.num_layers)
    ]
    specs.append(LayerSpec(FinalNormPipe, config, norm_impl))
    head_seed = init_seed + model.num_layers + 2
    if model.untie_embeddings_and_output_weights:
        specs.append(LayerSpec(OutputLayerPipe, config, padded_vocab, head_seed))
        return specs
    # The head's copy of the embedding has no position table: it only lends its word embedding.
    specs.append(
        TiedLayerSpec(TIED_KEY, EmbeddingPipe, config, padded_vocab, max_positions, "none",
                      head_seed, forward_fn=lm_head, tied_weight_attr=TIED_WEIGHT_ATTR)
    )
    return specs


class SequentialGPT(torch.nn.Module):
    """The layer list on one stage (PP = 1), trained by DeepSpeed's regular engine.

    forward(tokens) returns logits; forward(tokens, labels, loss_mask) returns the loss.
    """

    def __init__(self, specs: List, recompute_group: int = 0, loss_fn=language_model_loss):
        super().__init__()
        self.loss_fn = loss_fn
        self.recompute_group = recompute_group  # consecutive transformer layers checkpointed as one
        self.tied_modules = torch.nn.ModuleDict()
        self._forward_funcs = []
        for index, spec in enumerate(specs):
            if isinstance(spec, TiedLayerSpec):
                if spec.key not in self.tied_modules:
                    self.tied_modules[spec.key] = spec.build()
                module = self.tied_modules[spec.key]
                self._forward_funcs.append(partial(spec.forward_fn, module) if spec.forward_fn else module)
            else:
                module = spec.build()
                self.add_module(str(index), module)
                self._forward_funcs.append(module)

    def _recompute_group_at(self, index: int) -> int:
        """Size of the checkpointed group of transformer layers starting at `index`, or 0."""
        if not self.recompute_group:
            return 0
        layers = [i for i, fn in enumerate(self._forward_funcs) if isinstance(fn, TransformerLayerPipe)]
        if index not in layers or layers.index(index) % self.recompute_group:
            return 0
        return len(layers[layers.index(index):][: self.recompute_group])

    def forward(self, tokens, labels=None, loss_mask=None):
        x = tokens
        funcs = self._forward_funcs
        i = 0
        while i < len(funcs):
            group = self._recompute_group_at(i)
            if group > 1 and torch.is_grad_enabled():
                x = checkpoint(lambda h, fs=funcs[i:i + group]: _run_all(fs, h), x)
                i += group
            else:
                x = funcs[i](x)
                i += 1
        if labels is None:
            return x
        return self.loss_fn(x, (labels, loss_mask))


def _run_all(funcs, x):
    for fn in funcs:
        x = fn(x)
    return x


def build_model(model: ModelConfig, padded_vocab: int, ctx: ParallelContext, bf16: bool, fp16: bool,
                seed: int) -> torch.nn.Module:
    """SequentialGPT for PP = 1, DeepSpeed PipelineModule for PP > 1."""
    specs = gpt_layer_specs(model, padded_vocab, ctx.layout.tp, bf16, fp16, seed + INIT_SEED_OFFSET, ctx.layout.pp,
                            ctx.layout.sequence_parallel)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        module = _build_stage(specs, model, ctx)
    # The engine decides how the replicated parameters' gradients are summed (training/engine.py).
    module.sequence_parallel_gradients = (SequenceParallelGradients(module) if ctx.layout.sequence_parallel
                                          else None)
    return module


def _build_stage(specs: List, model: ModelConfig, ctx: ParallelContext) -> torch.nn.Module:
    group = uniform_group_size(model)
    loss_fn = partial(language_model_loss, fused=model.cross_entropy_loss_fusion)
    if ctx.layout.pp == 1:
        return SequentialGPT(specs, recompute_group=group, loss_fn=loss_fn).to(ctx.device)
    # DeepSpeed's own `seed_layers` is left off: it also reseeds every forward pass from a
    # counter that checkpoints do not keep, which would change dropout after a resume.
    # Groups of layers to recompute: DeepSpeed's activation_checkpoint_interval over the
    # stage's layers, skipping groups that hold the embedding, final norm or head.
    return PipelineModule(
        layers=specs,
        loss_fn=loss_fn,
        topology=ctx.topology,
        partition_method="type:TransformerLayerPipe",
        activation_checkpoint_interval=group,
        activation_checkpoint_func=checkpoint,
        checkpointable_layers=["TransformerLayerPipe"],
    )
