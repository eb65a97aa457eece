"""Alignment scores between each source's gradient and the specific set's gradient, over the
whole model and all data-parallel ranks, with the standard error of each score.

`--dga-alignment` chooses the score (docs/dga.md derives each):
- raw:    a_i = <g_i, G>                      the first-order effect of an SGD step on g_i;
- adam:   a_i = <g_i, P G>, P = diag(1 / (sqrt(v_hat) + eps)) from the optimizer's state:
          the first-order effect of an Adam step (`preconditioner.py`);
- cosine: a_i = <g_i, G> / (|g_i| |G|).
Here g_i is the mean gradient of source i's probe micro batches over all data-parallel ranks
and G the same for the specific set.

Each data-parallel rank probes its own micro batches. The dot product is linear, so

    <mean_{r,m} g_i(r, m), G>  =  mean_{r,m} <g_i(r, m), G>:

the specific gradient is computed first and all-reduced once over the data-parallel group;
then every source micro batch's gradient is dotted into it as soon as its backward pass
returns it (no source gradient is ever held, for any number of sources), and one all-reduce of
the [sources x DP x micro batches] matrix of dots over the whole world finishes the job. That
all-reduce also sums the partial dots of tensor-parallel shards and pipeline stages.
Parameters replicated across tensor-parallel ranks count once, on TP rank 0
(`parallel.reductions.counts_once`). The tied embedding's gradient has a part on the first
stage and a part on the last: the specific gradient's two parts are summed once, and each
stage dots its own part of a source's gradient into that sum, which adds up to the whole.

The matrix of per-micro-batch dots also gives each score's standard error (their spread over
the DP x M micro batches, divided by sqrt(DP x M)), logged so that a user can see how noisy
the probes are; it does not include the noise of the specific gradient.

With pipeline parallelism the specific micro batches go through one pipeline schedule and all
the sources' micro batches through a second one (two fill-and-drain phases per update, not
k + 1). Cosine needs each source's whole gradient for its norm, so it keeps one source buffer
at a time and runs one schedule per source.

`full_allreduce_alignment` computes the same scores by all-reducing every source gradient over
data-parallel ranks: about k times more communication; it is the reference the tests compare
against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

from megatron_dga.data.batches import MicroBatch
from megatron_dga.mixing.gradients import FlatGradient, ProbeGradients
from megatron_dga.mixing.preconditioner import AdamPreconditioner
from megatron_dga.mixing.probes import ProbeData
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.reductions import counts_once, model_parallel_sum


def parameter_mask(layout: FlatGradient, keep) -> torch.Tensor:
    """1 on the parameters for which keep(param) holds, 0 elsewhere."""
    mask = layout.zeros()
    for index, p in enumerate(layout.params):
        if keep(p):
            layout.view(mask, index).fill_(1.0)
    return mask


@dataclass
class AlignmentMeasurement:
    scores: np.ndarray  # one per source, identical on every rank
    stderr: np.ndarray  # standard error of each score over the probe micro batches (NaN with one)


@dataclass
class AlignmentTimes:
    probe_seconds: float = 0.0
    measurements: int = 0
    last_seconds: float = field(default=0.0)


class AlignmentMeter:
    def __init__(self, gradients: ProbeGradients, probes: ProbeData, ctx: ParallelContext, kind: str = "raw",
                 preconditioner: Optional[AdamPreconditioner] = None):
        if kind == "adam" and preconditioner is None:
            raise ValueError("--dga-alignment adam needs the optimizer's preconditioner")
        self.gradients, self.layout, self.probes, self.ctx = gradients, gradients.layout, probes, ctx
        self.kind, self.preconditioner = kind, preconditioner
        self.owned = parameter_mask(self.layout, counts_once)  # every parameter counted once
        # Tied copies both count against the summed specific gradient: each holds its part.
        self.dot_mask = parameter_mask(self.layout, param_is_not_tensor_parallel_duplicate)
        self.times = AlignmentTimes()

    @property
    def _dp(self) -> int:
        return self.ctx.layout.dp

    def _dp_mean_(self, flat: torch.Tensor) -> torch.Tensor:
        if self._dp > 1:
            dist.all_reduce(flat, group=self.ctx.dp_group)
            flat /= self._dp
        return flat

    def _norm(self, flat: torch.Tensor) -> torch.Tensor:
        """|x| over the whole model, from this rank's (tied-summed) buffer."""
        return model_parallel_sum(torch.dot(flat * self.owned, flat)).sqrt()

    def specific_gradient(self) -> torch.Tensor:
        """G (preconditioned by P with adam), averaged over data-parallel ranks, tied parts
        summed, tensor-parallel duplicates zeroed: ready to be dotted into."""
        spe = self._dp_mean_(self.gradients.mean(self.probes.specific_microbatches()))
        spe.mul_(self.dot_mask)
        if self.kind == "adam":
            self.preconditioner.apply_(spe)
        return spe

    def _micro_batches(self, sources: List[int]) -> List[MicroBatch]:
        return [mb for j in sources for mb in self.probes.source_microbatches(j)]

    def measure(self) -> AlignmentMeasurement:
        start = time.time()
        self.probes.begin_update()
        spe = self.specific_gradient()
        n, m = self.probes.num_sources, self.probes.probe_microbatches
        dots = torch.zeros((n, self._dp, m), dtype=spe.dtype, device=spe.device)
        rank = self.ctx.dp_rank

        def dot_into(offset: int):
            def visit(index, grads, unscale):
                j, micro = divmod(offset + index, m)
                dots[j, rank, micro] = self.layout.dot(spe, grads, unscale)
            return visit

        norms = None
        if self.kind == "cosine":
            norms = torch.zeros(n, dtype=spe.dtype, device=spe.device)
            for j in range(n):  # one source buffer at a time, for its norm
                buffer = self.layout.zeros()

                def visit(index, grads, unscale, j=j, buffer=buffer):
                    dot_into(j * m)(index, grads, unscale)
                    self.layout.add_(buffer, grads, unscale / m)
                self.gradients.run(self.probes.source_microbatches(j), visit)
                self.gradients.reduce_tied(buffer)
                norms[j] = self._norm(self._dp_mean_(buffer))
        else:
            self.gradients.run(self._micro_batches(list(range(n))), dot_into(0))
        dist.all_reduce(dots)  # sums TP shards and PP stages; DP ranks fill their own column
        self.probes.end_update()
        per_microbatch = dots.reshape(n, -1).cpu().numpy().astype(np.float64)
        scores = per_microbatch.mean(axis=1)
        count = per_microbatch.shape[1]
        stderr = per_microbatch.std(axis=1, ddof=1) / np.sqrt(count) if count > 1 else np.full(n, np.nan)
        if norms is not None:
            scale = (norms * self._norm(spe)).cpu().numpy().astype(np.float64)
            scores, stderr = scores / scale, stderr / scale
        self.times.last_seconds = time.time() - start
        self.times.probe_seconds += self.times.last_seconds
        self.times.measurements += 1
        return AlignmentMeasurement(scores, stderr)


def full_allreduce_alignment(meter: AlignmentMeter) -> np.ndarray:
    """Reference: all-reduce every source gradient over data-parallel ranks, then dot."""
    probes = meter.probes
    probes.begin_update()
    spe = meter._dp_mean_(meter.gradients.mean(probes.specific_microbatches()))
    spe_norm = meter._norm(spe)
    if meter.kind == "adam":
        meter.preconditioner.apply_(spe)
    scores = []
    for source in range(probes.num_sources):
        g = meter._dp_mean_(meter.gradients.mean(probes.source_microbatches(source)))
        score = model_parallel_sum(torch.dot(g * meter.owned, spe))
        if meter.kind == "cosine":
            score = score / (meter._norm(g) * spe_norm)
        scores.append(float(score))
    probes.end_update()
    return np.asarray(scores)
