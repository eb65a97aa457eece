"""The small patches megatron-core needs to run on a machine without CUDA.

megatron-core is written for GPUs. Its tensor-parallel layers run on CPU except for five
places, which this module patches, and only when CUDA is absent:

1. `GlobalMemoryBuffer.get_tensor` allocates its scratch buffers on
   `torch.cuda.current_device()`; we allocate them on the CPU instead.
2. The model-parallel RNG tracker (`tensor_parallel.random`) saves and restores *CUDA*
   generator states, so that dropout inside tensor-parallel regions differs across TP ranks.
   `CpuRNGStatesTracker` keeps the same `add/fork/get_states/set_states/reset` interface over
   the CPU generator.
3. `RotaryEmbedding.get_emb` (rotary positions) moves its inverse frequencies to
   `torch.cuda.current_device()` on first use; on the CPU they stay where they are.
4. `tensor_parallel.checkpoint` (selective recompute of the core attention) saves and
   restores CUDA generator states; on the CPU it is `model.recompute.checkpoint`, which
   restores the CPU generator and the tracker instead.
5. Sequence parallelism's all-gathers and reduce-scatters (`tensor_parallel.mappings`, and the
   backward pass of `tensor_parallel.layers`' linears) allocate their outputs on
   `torch.cuda.current_device()`. Those two modules get a view of `torch` whose
   `cuda.current_device()` is the CPU; everything else in it is torch itself.

Everything else (layers, collectives through gloo, cross entropy) is megatron-core as is.
On a CUDA machine `apply_cpu_shims()` does nothing.
"""

from __future__ import annotations

import contextlib
import functools
import operator
from typing import Dict

import torch
from megatron.core import tensor_parallel
from megatron.core import utils as mcore_utils
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.tensor_parallel import layers as mcore_layers
from megatron.core.tensor_parallel import mappings as mcore_mappings
from megatron.core.tensor_parallel import random as mcore_random

_APPLIED = False


def _cpu_get_tensor(self, tensor_shape, dtype, name, mem_alloc_context=None):
    """`GlobalMemoryBuffer.get_tensor` with the buffer on the CPU."""
    required_len = functools.reduce(operator.mul, tensor_shape, 1)
    key = (name, dtype)
    if self.buffer.get(key) is None or self.buffer[key].numel() < required_len:
        self.buffer[key] = torch.empty(required_len, dtype=dtype, requires_grad=False)
    return self.buffer[key][0:required_len].view(*tensor_shape)


def _cpu_rotary_get_emb(self, max_seq_len: int, offset: int = 0) -> torch.Tensor:
    """`RotaryEmbedding.get_emb` without the move of `inv_freq` to CUDA: [s, 1, 1, dim]."""
    freqs = self.get_freqs_non_repeated(max_seq_len, offset)
    if not self.rotary_interleaved:
        emb = torch.cat((freqs, freqs), dim=-1)
    else:
        emb = torch.stack((freqs.view(-1, 1), freqs.view(-1, 1)), dim=-1).view(freqs.shape[0], -1)
    return emb[:, None, None, :]


class CpuRNGStatesTracker(mcore_random.CudaRNGStatesTracker):
    """megatron-core's RNG tracker over the CPU generator.

    `fork(name)` swaps the CPU generator to the named state for the duration of the block and
    stores the advanced state back, exactly as the CUDA tracker does with CUDA states.
    """

    def __init__(self):
        super().__init__(use_cudagraphable_rng=False)

    def add(self, name: str, seed: int) -> None:
        self._is_initialized = True
        if seed in self.seeds_:
            raise ValueError(f"seed {seed} already exists")
        if name in self.states_:
            raise ValueError(f"rng state {name} already exists")
        self.seeds_.add(seed)
        generator = torch.Generator()
        generator.manual_seed(seed)
        self.states_[name] = generator.get_state()

    def get_states(self) -> Dict[str, torch.Tensor]:
        return {name: state.clone() for name, state in self.states_.items()}

    @contextlib.contextmanager
    def fork(self, name: str = mcore_random._MODEL_PARALLEL_RNG_TRACKER_NAME):
        if name not in self.states_:
            raise KeyError(f"rng state {name} is not added")
        outer_state = torch.get_rng_state()
        torch.set_rng_state(self.states_[name])
        try:
            yield
        finally:
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(outer_state)


class _CudaOnCpu:
    """`torch.cuda` with `current_device()` answering the CPU."""

    @staticmethod
    def current_device() -> torch.device:
        return torch.device("cpu")

    def __getattr__(self, name):
        return getattr(torch.cuda, name)


class _TorchOnCpu:
    """`torch`, except that `torch.cuda` is `_CudaOnCpu`."""

    cuda = _CudaOnCpu()

    def __getattr__(self, name):
        return getattr(torch, name)


def _cpu_checkpoint(function, distribute_saved_activations, *args):
    from megatron_dga.model.recompute import checkpoint

    return checkpoint(function, *args)


def apply_cpu_shims() -> bool:
    """Patch megatron-core for CPU when CUDA is absent. Returns whether patches are active."""
    global _APPLIED
    if torch.cuda.is_available():
        return False
    if not _APPLIED:
        mcore_utils.GlobalMemoryBuffer.get_tensor = _cpu_get_tensor
        RotaryEmbedding.get_emb = _cpu_rotary_get_emb
        mcore_random._CUDA_RNG_STATE_TRACKER = CpuRNGStatesTracker()
        mcore_random._CUDA_RNG_STATE_TRACKER_INITIALIZED = True
        tensor_parallel.checkpoint = _cpu_checkpoint
        mcore_mappings.torch = _TorchOnCpu()
        mcore_layers.torch = _TorchOnCpu()
        _APPLIED = True
    return True


def model_parallel_manual_seed(seed: int, tp_rank: int) -> None:
    """Seed megatron-core's RNG tracker on CPU or GPU.

    Same seeds as `megatron.core.tensor_parallel.model_parallel_cuda_manual_seed`: the default
    (data-parallel) state gets `seed`, the tensor-parallel state `seed + 2718 + tp_rank`.
    """
    if torch.cuda.is_available():
        mcore_random.model_parallel_cuda_manual_seed(seed, tp_rank=tp_rank, ep_rank=0, etp_rank=0)
        return
    tracker = mcore_random.get_cuda_rng_tracker()
    tracker.reset()
    tracker.add(mcore_random._DATA_PARALLEL_RNG_TRACKER_NAME, seed)
    tracker.add(mcore_random._MODEL_PARALLEL_RNG_TRACKER_NAME, seed + 2718 + tp_rank)
    tracker.add(mcore_random._EXPERT_PARALLEL_RNG_TRACKER_NAME, seed + 1024)
