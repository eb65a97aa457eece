"""megatron-core `TransformerConfig` from our flags, and Megatron's vocabulary padding."""

from __future__ import annotations

import importlib.util
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig
from megatron.core.transformer.utils import openai_gelu

from megatron_dga.config import ModelConfig


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron's rule: pad to a multiple of divisible_by x TP so every TP shard of the
    embedding has the same, GPU-friendly number of rows."""
    multiple = divisible_by * tp
    return ((vocab_size + multiple - 1) // multiple) * multiple


def have_transformer_engine() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def have_apex() -> bool:
    return importlib.util.find_spec("apex") is not None


def use_transformer_engine(model: ModelConfig) -> bool:
    """Whether the layers are Transformer Engine's: only when asked for (--transformer-impl
    transformer_engine, or auto on a machine that has it and CUDA)."""
    if model.transformer_impl == "transformer_engine":
        if not have_transformer_engine():
            raise ValueError("--transformer-impl transformer_engine: transformer_engine is not installed")
        used = True
    else:
        used = model.transformer_impl == "auto" and have_transformer_engine() and torch.cuda.is_available()
    if used and model.attention_backend != "auto":
        raise ValueError(f"--attention-backend {model.attention_backend} is not used by Transformer Engine's layers "
                         f"(they bring their own attention): leave it at auto, or use --transformer-impl local")
    return used


def layer_implementation(model: ModelConfig) -> str:
    """What a checkpoint records: 'transformer_engine' or 'local' (parameter names differ)."""
    return "transformer_engine" if use_transformer_engine(model) else "local"


def params_dtype(bf16: bool, fp16: bool) -> torch.dtype:
    return torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32


def activation(model: ModelConfig, fused: bool):
    """The MLP's activation. megatron-core's fused bias-GELU kernel computes the tanh
    approximation, so it may stand for GELU only when that is the activation asked for."""
    if model.swiglu:
        return F.silu
    if model.openai_gelu:
        return F.gelu if fused else openai_gelu
    return F.gelu


def use_bias_activation_fusion(model: ModelConfig, on_gpu: bool) -> bool:
    """megatron-core's jit-fused bias + activation, on GPU, where it computes what is asked:
    SwiGLU (with or without biases), or tanh-approximated GELU with biases (megatron-core
    refuses GELU fusion without them, and its kernel is not the exact GELU)."""
    if not on_gpu:
        return False
    if model.swiglu:
        return model.bias_swiglu_fusion
    return model.openai_gelu and not model.disable_bias_linear and model.bias_gelu_fusion


def query_groups(model: ModelConfig):
    if not model.group_query_attention:
        return None
    groups = model.num_query_groups
    if not groups or model.num_attention_heads % groups:
        raise ValueError(f"--num-query-groups {groups} must divide --num-attention-heads "
                         f"{model.num_attention_heads} (with --group-query-attention)")
    return groups


def build_transformer_config(model: ModelConfig, tp: int, bf16: bool, fp16: bool,
                             on_gpu: Optional[bool] = None, sequence_parallel: bool = False) -> TransformerConfig:
    """The per-layer config. Pipeline parallelism is DeepSpeed's, so megatron-core sees
    pipeline size 1 and layer numbers are global (no per-stage offset). `on_gpu` (default:
    whether CUDA is present) chooses the GPU-only switches; tests build the GPU config on CPU.
    Sequence parallelism needs TP > 1 (megatron-core turns it off otherwise, with a warning)."""
    dtype = params_dtype(bf16, fp16)
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
    fused_activation = use_bias_activation_fusion(model, on_gpu)
    return TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=query_groups(model),
        ffn_hidden_size=model.ffn_hidden_size or 4 * model.hidden_size,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=1,
        sequence_parallel=sequence_parallel and tp > 1,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        init_method_std=model.init_method_std,
        layernorm_epsilon=model.layernorm_epsilon,
        normalization=model.normalization,
        add_bias_linear=not model.disable_bias_linear,
        gated_linear_unit=model.swiglu,
        activation_func=activation(model, fused_activation),
        use_cpu_initialization=not on_gpu if model.use_cpu_initialization is None else model.use_cpu_initialization,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=bf16,
        fp16=fp16,
        # The fused kernels below are jit-compiled torch code on GPU (torch.compile: a compile on
        # the first iteration, and again for evaluation and probes; --no-bias-dropout-fusion and
        # --no-bias-swiglu-fusion / --no-bias-gelu-fusion turn them off); the softmax, layer-norm
        # and gradient-accumulation fusions need apex/Megatron CUDA extensions.
        bias_activation_fusion=fused_activation,
        bias_dropout_fusion=on_gpu and model.bias_dropout_fusion,
        masked_softmax_fusion=False,
        persist_layer_norm=on_gpu and have_apex(),
        gradient_accumulation_fusion=False,
        apply_rope_fusion=False,
        # "selective": megatron-core recomputes the core attention inside each layer; "full" is
        # ours (model/recompute.py), around whole layers.
        recompute_granularity="selective" if model.recompute_granularity == "selective" else None,
    )
