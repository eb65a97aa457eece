"""Inner products and norms of gradients sharded over tensor and pipeline ranks.

Each rank holds a slice of the parameters: tensor-parallel layers hold a shard of a weight,
other parameters (layer norms, biases of row-parallel layers) are replicated on every TP rank,
and with pipeline parallelism each stage holds its layers, the last stage also a copy of the
tied embedding. A global inner product <x, y> over all parameters is then the sum over the
model-parallel group (TP x PP) of local inner products over the parameters this rank
"owns": shards always, replicated parameters on TP rank 0 only, the tied embedding on the
first stage only. This is megatron-core's rule for gradient norms
(`param_is_not_tensor_parallel_duplicate`), and DeepSpeed's marker for the pipeline copy of a
tied weight (`ds_pipe_replicated`); a gradient norm is the inner product of a gradient with
itself.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate


def counts_once(param: torch.nn.Parameter) -> bool:
    """Whether this rank's copy of `param` is the one counted in global sums."""
    if getattr(param, "ds_pipe_replicated", False):
        return False
    return param_is_not_tensor_parallel_duplicate(param)


def model_parallel_sum(local: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over the tensor- and pipeline-parallel ranks of this model replica."""
    group = parallel_state.get_model_parallel_group()
    if dist.get_world_size(group) > 1:
        dist.all_reduce(local, op=dist.ReduceOp.SUM, group=group)
    return local


CHUNK = 1 << 22  # elements converted to the accumulation dtype at a time (no full-size copy)


def local_dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_i <xs[i], ys[i]> in fp32 (float64 on CPU for exact comparisons in tests)."""
    on_gpu = torch.cuda.is_available()
    dtype = torch.float32 if on_gpu else torch.float64
    total = torch.zeros((), dtype=dtype, device=torch.cuda.current_device() if on_gpu else "cpu")
    for x, y in zip(xs, ys):
        x, y = x.reshape(-1), y.reshape(-1)
        for start in range(0, x.numel(), CHUNK):
            total += torch.dot(x[start: start + CHUNK].to(dtype), y[start: start + CHUNK].to(dtype))
    return total


def global_grad_norm(params: Iterable[torch.nn.Parameter]) -> torch.Tensor:
    """L2 norm of the gradient of the whole model, from this rank's parameters."""
    grads = [p.grad for p in params if p.grad is not None and counts_once(p)]
    return model_parallel_sum(local_dot(grads, grads)).sqrt()
