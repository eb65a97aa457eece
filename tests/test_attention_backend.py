"""--attention-backend sdpa computes megatron-core's unfused attention: same outputs and gradients
(dropout 0, or any dropout in eval mode), with grouped-query attention too."""

import os

import pytest
import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.transformer.dot_product_attention import DotProductAttention
from megatron.core.transformer.enums import AttnMaskType

from megatron_dga.config import ModelConfig
from megatron_dga.model.attention import SDPAttention
from megatron_dga.model.layers import causal_mask
from megatron_dga.model.transformer_config import build_transformer_config
from megatron_dga.parallel.cpu_shims import apply_cpu_shims, model_parallel_manual_seed


@pytest.fixture(scope="module")
def model_parallel():
    # a store of its own, not MASTER_ADDR/MASTER_PORT, which later subprocesses would inherit
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    apply_cpu_shims()
    parallel_state.initialize_model_parallel(1, 1)
    model_parallel_manual_seed(1234, 0)
    yield
    parallel_state.destroy_model_parallel()
    dist.destroy_process_group()


def attention_pair(groups, dropout):
    model = ModelConfig(hidden_size=64, num_attention_heads=8, attention_dropout=dropout,
                        group_query_attention=groups != 8, num_query_groups=groups if groups != 8 else None)
    config = build_transformer_config(model, tp=1, bf16=False, fp16=False, on_gpu=False)
    kwargs = dict(layer_number=1, attn_mask_type=AttnMaskType.causal, attention_type="self")
    return DotProductAttention(config, **kwargs), SDPAttention(config, **kwargs)


def inputs(groups, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(16, 3, 8, 8, generator=g, requires_grad=True)
    k = torch.randn(16, 3, groups, 8, generator=g, requires_grad=True)
    v = torch.randn(16, 3, groups, 8, generator=g, requires_grad=True)
    return q, k, v


@pytest.mark.parametrize("groups", [8, 2])
@pytest.mark.parametrize("dropout,training", [(0.0, True), (0.3, False)])
def test_sdpa_equals_the_unfused_attention(model_parallel, groups, dropout, training):
    unfused, sdpa = attention_pair(groups, dropout)
    unfused.train(training)
    sdpa.train(training)
    results = []
    for module in (unfused, sdpa):
        q, k, v = inputs(groups)
        out = module(q, k, v, causal_mask(16, torch.device("cpu")))
        (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
        results.append((out.detach(), q.grad, k.grad, v.grad))
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_sdpa_dropout_is_applied_in_training(model_parallel):
    _, sdpa = attention_pair(8, 0.5)
    q, k, v = inputs(8)
    sdpa.eval()
    reference = sdpa(q, k, v, None)
    sdpa.train()
    dropped = sdpa(q, k, v, None)
    assert not torch.allclose(dropped, reference)
