"""What sequence parallelism (`--sequence-parallel`) needs beyond megatron-core's layers.

With TP > 1 and sequence parallelism, activations outside the tensor-parallel region (layer
norms, dropouts, residual adds) are cut along the sequence: each TP rank holds [s/TP, b, h].
megatron-core's layers do the rest: the embedding scatters its output over the sequence, each
column-parallel linear all-gathers its input, each row-parallel linear reduce-scatters its
output. Four things are left to the model that stacks the layers, done here:

- **Norms.** megatron-core's torch norms (the local spec without apex) refuse the flag,
  although a norm is pointwise over positions and computes the same on a slice of the
  sequence. `sequence_parallel_spec` swaps them for the same torch norm whose parameters carry
  megatron-core's `sequence_parallel` mark, as its apex and Transformer Engine norms do.
- **Gradients of replicated parameters.** A marked parameter (norm weights and biases, the
  biases of row-parallel linears) sees only its rank's part of the sequence, so its gradient
  is a partial sum over the TP ranks. Megatron all-reduces these after the backward pass; here
  a hook sums each one over the TP group as it is computed, before DeepSpeed's own hooks
  (ZeRO-2 reduces and partitions gradients during the backward pass) and before the DGA
  probes' `torch.autograd.grad` returns it.
- **Positions.** A layer sees s/TP positions but attends over all s: the causal mask and the
  rotary table are built for `full_sequence_length`.
- **The LM head.** The tied head all-gathers the sequence before its vocabulary-parallel
  matmul (backward: a reduce-scatter of the partial input gradients); the untied head is a
  ColumnParallelLinear, which does it itself.
"""

from __future__ import annotations

import copy
from functools import partial

import torch
import torch.distributed as dist
from megatron.core import parallel_state, tensor_parallel
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.torch_norm import WrappedTorchNorm
from megatron.core.transformer.transformer_config import TransformerConfig


class SequenceParallelTorchNorm:
    """megatron-core's `WrappedTorchNorm` (torch LayerNorm / RMSNorm) on a slice of the
    sequence, its parameters marked `sequence_parallel` like megatron-core's fused norms."""

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **kwargs):
        plain = copy.copy(config)
        plain.sequence_parallel = False  # only WrappedTorchNorm's refusal reads it
        norm = WrappedTorchNorm(plain, hidden_size, eps, **kwargs)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm


def sequence_parallel_norm(norm_impl):
    """The norm class to build under sequence parallelism in place of `norm_impl`."""
    return SequenceParallelTorchNorm if norm_impl is WrappedTorchNorm else norm_impl


def sequence_parallel_spec(spec: ModuleSpec) -> ModuleSpec:
    """The transformer layer spec with its torch norms swapped (in place; returns `spec`)."""
    submodules = spec.submodules
    for name in ("input_layernorm", "pre_cross_attn_layernorm", "pre_mlp_layernorm"):
        if hasattr(submodules, name):
            setattr(submodules, name, sequence_parallel_norm(getattr(submodules, name)))
    return spec


def full_sequence_length(hidden: torch.Tensor, config: TransformerConfig) -> int:
    """Positions a layer attends over: its input's, times TP under sequence parallelism."""
    if config.sequence_parallel:
        return hidden.shape[0] * parallel_state.get_tensor_model_parallel_world_size()
    return hidden.shape[0]


def gather_for_lm_head(hidden: torch.Tensor, config: TransformerConfig) -> torch.Tensor:
    """The tied head's input in the TP region: the whole sequence on every TP rank. Backward,
    the input gradients (partial sums over vocabulary shards) are summed over the TP ranks."""
    if config.sequence_parallel:
        return tensor_parallel.gather_from_sequence_parallel_region(hidden, tensor_parallel_output_grad=True)
    return tensor_parallel.copy_to_tensor_model_parallel_region(hidden)


def _sum_over_tensor_parallel_ranks(group, grad: torch.Tensor) -> torch.Tensor:
    total = grad.clone()
    dist.all_reduce(total, group=group)
    return total


def sum_sequence_parallel_grads(module: torch.nn.Module) -> int:
    """Hook every parameter marked `sequence_parallel` so that its gradient is summed over the
    tensor-parallel group when it is computed. Returns how many parameters were hooked.

    Every TP rank runs the same graph, so the hooks' all-reduces come in the same order on all
    of them. They are small (a norm's or a bias's size) and one per parameter per micro batch;
    Megatron instead batches them into one all-reduce after the backward pass, which does not
    fit ZeRO-2's reduction during the backward pass."""
    group = parallel_state.get_tensor_model_parallel_group()
    hooked = 0
    for param in module.parameters():
        if param.requires_grad and getattr(param, "sequence_parallel", False):
            param.register_hook(partial(_sum_over_tensor_parallel_ranks, group))
            hooked += 1
    return hooked
