"""Alignment scores a_i = <grad L_i, grad L_spe> over the whole model and all data-parallel ranks.

Each data-parallel rank probes its own micro batches, so the gradients DGA wants are the
means over data-parallel ranks. The dot product is linear, so

    <mean_r g_i(r), G>  =  mean_r <g_i(r), G>      with G = mean_r G_spe(r):

the specific gradient is all-reduced once over the data-parallel group, every rank takes
local dot products with each source's gradient as it is computed (one gradient held at a
time, never k), and one all-reduce of the k-vector over the whole world finishes the job. That
last all-reduce also sums the partial dots of tensor-parallel shards and pipeline stages;
parameters held by several ranks (replicated across TP, the tied embedding's copy on the
last stage) are counted once, on their owner (`parallel.reductions.counts_once`).
`full_allreduce_alignment` computes the same numbers by all-reducing every source gradient:
about k times more communication; it is the reference the tests compare against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, List

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_dga.data.batches import MicroBatch
from megatron_dga.mixing.gradients import FlatGradient
from megatron_dga.mixing.probes import ProbeData
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.reductions import counts_once


def owned_mask(layout: FlatGradient) -> torch.Tensor:
    """1 where this rank's copy of a parameter is the counted one, else 0."""
    mask = layout.zeros()
    for index, p in enumerate(layout.params):
        if counts_once(p):
            layout.view(mask, index).fill_(1.0)
    return mask


@dataclass
class AlignmentTimes:
    probe_seconds: float = 0.0
    measurements: int = 0
    last_seconds: float = field(default=0.0)


class AlignmentMeter:
    def __init__(self, gradient: Callable[[List[MicroBatch]], torch.Tensor], layout: FlatGradient,
                 probes: ProbeData, ctx: ParallelContext):
        self.gradient, self.layout, self.probes, self.ctx = gradient, layout, probes, ctx
        self.mask = owned_mask(layout)
        self.times = AlignmentTimes()

    def _specific_gradient(self) -> torch.Tensor:
        """The specific gradient averaged over data-parallel ranks, non-owned entries zeroed."""
        spe = self.gradient(self.probes.specific_microbatches())
        if self.ctx.layout.dp > 1:
            dist.all_reduce(spe, group=self.ctx.dp_group)
            spe /= self.ctx.layout.dp
        return spe.mul_(self.mask)

    def measure(self) -> np.ndarray:
        """One alignment score per source; identical on every rank."""
        start = time.time()
        self.probes.begin_update()
        spe = self._specific_gradient()
        local = torch.zeros(self.probes.num_sources, dtype=spe.dtype, device=spe.device)
        for source in range(self.probes.num_sources):
            local[source] = torch.dot(self.gradient(self.probes.source_microbatches(source)), spe)
        dist.all_reduce(local)  # sums TP shards and PP stages, and the data-parallel ranks ...
        local /= self.ctx.layout.dp  # ... whose mean is wanted
        self.probes.end_update()
        self.times.last_seconds = time.time() - start
        self.times.probe_seconds += self.times.last_seconds
        self.times.measurements += 1
        return local.cpu().numpy().astype(np.float64)


def full_allreduce_alignment(meter: AlignmentMeter) -> np.ndarray:
    """Reference: all-reduce every source gradient over data-parallel ranks, then dot."""
    probes, ctx = meter.probes, meter.ctx
    probes.begin_update()
    spe = meter._specific_gradient()
    scores = []
    for source in range(probes.num_sources):
        g = meter.gradient(probes.source_microbatches(source))
        if ctx.layout.dp > 1:
            dist.all_reduce(g, group=ctx.dp_group)
            g /= ctx.layout.dp
        partial = torch.dot(g, spe).reshape(1)
        dist.all_reduce(partial, group=parallel_state.get_model_parallel_group())
        scores.append(float(partial))
    probes.end_update()
    return np.asarray(scores)
