"""Activation recompute: keep a checkpointed block's input only, run it again in the backward.

`checkpoint(fn, *args)` is torch's non-reentrant checkpoint (it works with `torch.autograd.grad`,
which DGA's probes use) plus megatron-core's model-parallel RNG tracker: torch saves and restores
the default generators (CPU and CUDA) around the recompute, and this restores the tracker's
states too, so dropout inside tensor-parallel regions draws the same masks the second time.

Which layers, as in Megatron-LM (`--recompute-granularity full`):
- `--recompute-method uniform --recompute-num-layers N`: consecutive groups of N transformer
  layers are checkpointed as one (only each group's input is kept);
- `--recompute-method block --recompute-num-layers N`: the first N transformer layers of each
  pipeline stage are checkpointed one by one, the others keep their activations.
`--recompute-granularity selective` leaves the layers alone and lets megatron-core recompute
the core attention only (the [b, heads, s, s] scores), inside each layer.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
import torch.utils.checkpoint
from megatron.core.tensor_parallel import get_cuda_rng_tracker


def checkpoint(function: Callable, *args):
    tracker = get_cuda_rng_tracker()

    def contexts():
        saved = tracker.get_states()

        @contextlib.contextmanager
        def recompute():
            current = tracker.get_states()
            tracker.set_states(saved)
            try:
                yield
            finally:
                tracker.set_states(current)

        return contextlib.nullcontext(), recompute()

    return torch.utils.checkpoint.checkpoint(function, *args, use_reentrant=False, context_fn=contexts,
                                             preserve_rng_state=True)


def layer_recomputed_alone(model, layer_number: int, layers_per_stage: int) -> bool:
    """Whether transformer layer `layer_number` (1-based, global) is checkpointed by itself."""
    if model.recompute_granularity != "full":
        return False
    n = model.recompute_num_layers
    if model.recompute_method == "block":
        return (layer_number - 1) % layers_per_stage < n
    return n == 1  # uniform: alone when groups have one layer; larger groups are checkpointed whole


def uniform_group_size(model) -> int:
    """Layers per checkpointed group, when groups hold more than one layer (else 0)."""
    if model.recompute_granularity == "full" and model.recompute_method == "uniform" and model.recompute_num_layers > 1:
        return model.recompute_num_layers
    return 0
