"""The TransformerConfig the GPU path builds, built here on the CPU: every GPU-only switch is one
megatron-core accepts, and computes what the flags ask for."""

import pytest
import torch.nn.functional as F
from megatron.core.transformer.utils import openai_gelu

from megatron_dga.config import ModelConfig
from megatron_dga.model.transformer_config import build_transformer_config


@pytest.mark.parametrize("flags,fused_on_gpu,on_gpu_activation,on_cpu_activation", [
    # megatron-core's fused bias-GELU is the tanh approximation, not the exact GELU asked for
    ({}, False, F.gelu, F.gelu),
    # and megatron-core refuses it without biases
    ({"disable_bias_linear": True}, False, F.gelu, F.gelu),
    # the fused kernel is the tanh approximation asked for; without it, the tanh GELU itself
    ({"openai_gelu": True}, True, F.gelu, openai_gelu),
    ({"openai_gelu": True, "disable_bias_linear": True}, False, openai_gelu, openai_gelu),
    ({"swiglu": True}, True, F.silu, F.silu),
    ({"swiglu": True, "disable_bias_linear": True}, True, F.silu, F.silu),
])
def test_activation_fusion_only_where_it_computes_the_activation(flags, fused_on_gpu, on_gpu_activation,
                                                                 on_cpu_activation):
    gpu = build_transformer_config(ModelConfig(**flags), tp=1, bf16=True, fp16=False, on_gpu=True)
    assert gpu.bias_activation_fusion is fused_on_gpu
    assert gpu.activation_func is on_gpu_activation
    cpu = build_transformer_config(ModelConfig(**flags), tp=1, bf16=False, fp16=False, on_gpu=False)
    assert cpu.bias_activation_fusion is False
    assert cpu.activation_func is on_cpu_activation


def test_gpu_config_with_grouped_query_attention_and_rope():
    model = ModelConfig(num_attention_heads=8, hidden_size=256, group_query_attention=True, num_query_groups=2,
                        normalization="RMSNorm", swiglu=True, position_embedding_type="rope",
                        disable_bias_linear=True)
    config = build_transformer_config(model, tp=2, bf16=True, fp16=False, on_gpu=True)
    assert config.num_query_groups == 2 and config.bias_activation_fusion and config.bf16


def test_weights_are_initialised_on_the_gpu_unless_asked_otherwise():
    """On a GPU each rank initialises its own shards on the device (megatron-core's GPU path),
    so no host builds full-size fp32 weights; --use-cpu-initialization keeps the CPU path, which
    the CPU always takes (identical weights in every layout)."""
    on_gpu = lambda **flags: build_transformer_config(ModelConfig(**flags), 2, True, False, on_gpu=True)  # noqa
    on_cpu = lambda **flags: build_transformer_config(ModelConfig(**flags), 2, False, False, on_gpu=False)  # noqa
    assert on_gpu().use_cpu_initialization is False
    assert on_gpu(use_cpu_initialization=True).use_cpu_initialization is True
    assert on_cpu().use_cpu_initialization is True
    assert on_cpu(use_cpu_initialization=False).use_cpu_initialization is False


def test_cpu_initialization_flag_has_three_states():
    from megatron_dga.arguments import parse_args

    assert parse_args(["--data-path", "x"]).model.use_cpu_initialization is None
    assert parse_args(["--data-path", "x", "--use-cpu-initialization"]).model.use_cpu_initialization is True
    assert parse_args(["--data-path", "x", "--no-use-cpu-initialization"]).model.use_cpu_initialization is False
