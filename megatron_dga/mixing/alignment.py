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
then every source micro batch's gradient is dotted into it parameter by parameter as the
backward pass produces it (`gradients.GradientTap`: no source gradient is ever held, not even
one micro batch's), and one all-reduce of the [sources x DP x micro batches] matrix of dots over
the whole world finishes the job. That
all-reduce also sums the partial dots of tensor-parallel shards and pipeline stages.
Parameters replicated across tensor-parallel ranks count once, on TP rank 0
(`parallel.reductions.counts_once`). The tied embedding's gradient has a part on the first
stage and a part on the last: the specific gradient's two parts are summed once, and each
stage dots its own part of a source's gradient into that sum, which adds up to the whole.

The matrix of per-micro-batch dots also gives each score's standard error (their spread over
the DP x M micro batches, divided by sqrt(DP x M)), logged so that a user can see how noisy
the probes are; it does not include the noise of the specific gradient.

Memory: the specific direction (P G with adam) is the one parameter-sized buffer an update
holds, in fp32 (float64 on the CPU), and only during the update; which parameters count is a
flag per parameter, not a parameter-sized mask. Cosine is the exception: it needs each
source's whole gradient for its norm, so it keeps a second buffer, one source at a time.

With pipeline parallelism the specific micro batches go through one pipeline schedule and all
the sources' micro batches through a second one (two fill-and-drain phases per update, not
k + 1); cosine runs one schedule per source.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from megatron.core.tensor_parallel import param_is_not_tensor_parallel_duplicate

from megatron_dga.data.batches import MicroBatch
from megatron_dga.mixing.gradients import ProbeGradients, chunks
from megatron_dga.mixing.preconditioner import AdamPreconditioner
from megatron_dga.mixing.probes import ProbeData
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.reductions import counts_once, model_parallel_sum


@dataclass
class AlignmentMeasurement:
    scores: np.ndarray  # one per source, identical on every rank
    stderr: np.ndarray  # standard error of each score over the probe micro batches (NaN with one)
    # False when the scores are not in the units asked for: adam before the optimizer's first
    # step, which falls back on the raw inner product.
    in_kind_units: bool = True


@dataclass
class AlignmentTimes:
    probe_seconds: float = 0.0
    probe_tokens: int = 0  # input tokens of this rank's probe micro batches, the specific set's included
    measurements: int = 0
    last_seconds: float = field(default=0.0)


class AlignmentMeter:
    def __init__(self, gradients: ProbeGradients, probes: ProbeData, ctx: ParallelContext, kind: str = "raw",
                 preconditioner: Optional[AdamPreconditioner] = None):
        if kind == "adam" and preconditioner is None:
            raise ValueError("--dga-alignment adam needs the optimizer's preconditioner")
        self.gradients, self.layout, self.probes, self.ctx = gradients, gradients.layout, probes, ctx
        self.kind, self.preconditioner = kind, preconditioner
        params = self.layout.params
        self.owned = [counts_once(p) for p in params]  # every parameter counted once
        # Tied copies both count against the summed specific gradient: each holds its part.
        self.dotted = [param_is_not_tensor_parallel_duplicate(p) for p in params]
        self.times = AlignmentTimes()

    @property
    def _dp(self) -> int:
        return self.ctx.layout.dp

    def _dp_mean_(self, flat: torch.Tensor) -> torch.Tensor:
        if self._dp > 1:
            dist.all_reduce(flat, group=self.ctx.dp_group)
            flat /= self._dp
        return flat

    def norm(self, flat: torch.Tensor) -> torch.Tensor:
        """|x| over the whole model, from this rank's (tied-summed) buffer."""
        local = torch.zeros((), dtype=flat.dtype, device=flat.device)
        for index, owned in enumerate(self.owned):
            if owned:
                for (piece,) in chunks(self.layout.view(flat, index)):
                    local += torch.dot(piece, piece)
        return model_parallel_sum(local).sqrt()

    def specific_gradient(self) -> Tuple[torch.Tensor, bool]:
        """G (preconditioned by P with adam), averaged over data-parallel ranks, tied parts
        summed, tensor-parallel duplicates zeroed: ready to be dotted into. The flag is False
        where adam had no preconditioner yet and G is the raw gradient."""
        spe = self._dp_mean_(self.gradients.mean(self._counted(self.probes.specific_microbatches())))
        for index, dotted in enumerate(self.dotted):
            if not dotted:
                self.layout.view(spe, index).zero_()
        if self.kind == "adam":
            return spe, self.preconditioner.apply_(spe) is not None
        return spe, True

    def _counted(self, micro_batches: List[MicroBatch]) -> List[MicroBatch]:
        self.times.probe_tokens += sum(mb.tokens.numel() for mb in micro_batches)
        return micro_batches

    def _micro_batches(self, sources: List[int]) -> List[MicroBatch]:
        return self._counted([mb for j in sources for mb in self.probes.source_microbatches(j)])

    def measure(self, training_draws: Optional[np.ndarray] = None, micro_batch_size: Optional[int] = None,
                specific_micro_batch_size: Optional[int] = None,
                sequence_tokens: Optional[int] = None) -> AlignmentMeasurement:
        """The scores; `training_draws`: each domain's training draws so far, where its probes
        start reading (`probes.py`); `micro_batch_size`: the probe micro batch's, when cut;
        `specific_micro_batch_size`: the specific set's, where it differs from the sources';
        `sequence_tokens`: the sources' probe sequences' prefix, where cut to one."""
        start = time.time()
        self.probes.begin_update(training_draws, micro_batch_size, specific_micro_batch_size, sequence_tokens)
        spe, in_kind_units = self.specific_gradient()
        n, m = self.probes.num_sources, self.probes.probe_microbatches
        dots = torch.zeros((n, self._dp, m), dtype=spe.dtype, device=spe.device)
        rank = self.ctx.dp_rank

        def dot_into(offset: int):
            def consume(micro, index, grad, unscale):
                j, column = divmod(offset + micro, m)
                dots[j, rank, column] += self.layout.dot(spe, index, grad) * unscale
            return consume

        norms = None
        if self.kind == "cosine":
            norms = torch.zeros(n, dtype=spe.dtype, device=spe.device)
            for j in range(n):  # one source buffer at a time, for its norm
                buffer = self.layout.zeros()
                into_dots = dot_into(j * m)

                def consume(micro, index, grad, unscale, buffer=buffer, into_dots=into_dots):
                    into_dots(micro, index, grad, unscale)
                    self.layout.add_(buffer, index, grad, unscale / m)
                self.gradients.run(self._micro_batches([j]), consume)
                self.gradients.reduce_tied(buffer)
                norms[j] = self.norm(self._dp_mean_(buffer))
                del buffer
        else:
            self.gradients.run(self._micro_batches(list(range(n))), dot_into(0))
        dist.all_reduce(dots)  # sums TP shards and PP stages; DP ranks fill their own column
        self.probes.end_update()
        per_microbatch = dots.reshape(n, -1).cpu().numpy().astype(np.float64)
        scores = per_microbatch.mean(axis=1)
        count = per_microbatch.shape[1]
        stderr = per_microbatch.std(axis=1, ddof=1) / np.sqrt(count) if count > 1 else np.full(n, np.nan)
        if norms is not None:
            scale = (norms * self.norm(spe)).cpu().numpy().astype(np.float64)
            scores, stderr = scores / scale, stderr / scale
        self.times.last_seconds = time.time() - start
        self.times.probe_seconds += self.times.last_seconds
        self.times.measurements += 1
        return AlignmentMeasurement(scores, stderr, in_kind_units)
