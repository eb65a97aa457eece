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
  is a partial sum over the TP ranks. Megatron sums them all in one all-reduce after the
  backward pass. `SequenceParallelGradients` does that where DeepSpeed reads gradients only at
  its own reduction (training/engine.py decides); where DeepSpeed takes each gradient as
  autograd computes it (ZeRO-2, `overlap_comm`, fp32 accumulation buffers), and for the DGA
  probes' `torch.autograd.grad`, a hook sums each one as it is computed.
- **Positions.** A layer sees s/TP positions but attends over all s: the causal mask and the
  rotary table are built for `full_sequence_length`.
- **The LM head.** The tied head all-gathers the sequence before its vocabulary-parallel
  matmul (backward: a reduce-scatter of the partial input gradients); the untied head is a
  ColumnParallelLinear, which does it itself.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Dict, List

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
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


class SequenceParallelGradients:
    """Sums the gradients of the parameters marked `sequence_parallel` over the TP group.

    Two ways, one at a time:
    - per parameter (the default): a hook all-reduces each gradient as autograd computes it.
      Every TP rank runs the same graph, so the all-reduces come in the same order on all of
      them; they are small (a norm's or a bias's size) but one per parameter per micro batch.
    - bucketed: inside `deferred()` the hooks pass gradients through, and `sum_accumulated()`
      then sums every accumulated `.grad` in one all-reduce (per dtype), as Megatron does. Only
      right when nothing reads the gradients between the backward pass and that call.
    """

    def __init__(self, module: torch.nn.Module):
        self.group = parallel_state.get_tensor_model_parallel_group()
        self.params = [p for p in module.parameters() if p.requires_grad and getattr(p, "sequence_parallel", False)]
        self.per_parameter = True
        for param in self.params:
            param.register_hook(self._sum_as_computed)

    def _sum_as_computed(self, grad: torch.Tensor) -> torch.Tensor:
        if not self.per_parameter:
            return grad
        total = grad.clone()
        dist.all_reduce(total, group=self.group)
        return total

    @contextlib.contextmanager
    def deferred(self):
        """Training backward passes whose sums `sum_accumulated` makes afterwards."""
        self.per_parameter = False
        try:
            yield
        finally:
            self.per_parameter = True

    def sum_accumulated(self) -> None:
        """Sum the accumulated gradients over the TP ranks in one flat all-reduce per dtype."""
        by_dtype: Dict[torch.dtype, List[torch.Tensor]] = {}
        for param in self.params:
            if param.grad is not None:
                by_dtype.setdefault(param.grad.dtype, []).append(param.grad)
        for grads in by_dtype.values():
            flat = _flatten_dense_tensors(grads)
            dist.all_reduce(flat, group=self.group)
            for grad, summed in zip(grads, _unflatten_dense_tensors(flat, grads)):
                grad.copy_(summed)
