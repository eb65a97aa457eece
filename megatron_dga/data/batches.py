"""Micro batches for this data-parallel rank, read from the blend and the domain streams.

Iteration t consumes global sample positions [t * G, (t + 1) * G) (G: global batch). As in
Megatron's pretraining sampler, micro batch m of data-parallel rank r holds positions
t * G + (m * DP + r) * B + [0, B) (B: micro batch).

`PrefetchedBatches` reads the next iteration's micro batches in a background thread while the
current one trains (into pinned memory on GPUs, for an asynchronous copy). It never reads past a
weight change: the caller prefetches an iteration only when no mixture update comes before it,
and the blend is consulted on the caller's thread (the thread only reads sequences), so the
batches are exactly those read synchronously.

`TensorParallelSharedBatches` has the first rank of each tensor-parallel group read (and
prefetch) and broadcast the iteration's micro batches to its peers, as Megatron's `get_batch`
does: the peers need the same batch, and one reader per group reads 1/TP of the data.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from megatron_dga.data.blend import DynamicBlend
from megatron_dga.data.sequences import SequenceStream
from megatron_dga.parallel.layout import Layout


@dataclass
class MicroBatch:
    tokens: torch.Tensor  # [b, s] inputs
    labels: torch.Tensor  # [b, s] next tokens
    loss_mask: torch.Tensor  # [b, s] 1.0 where the loss counts

    def to(self, device) -> "MicroBatch":
        # From pinned memory the copy is asynchronous: the step's first kernels queue behind it.
        non_blocking = self.tokens.is_pinned()
        return MicroBatch(*(t.to(device, non_blocking=non_blocking) for t in (self.tokens, self.labels,
                                                                              self.loss_mask)))

    def pin_memory(self) -> "MicroBatch":
        return MicroBatch(self.tokens.pin_memory(), self.labels.pin_memory(), self.loss_mask.pin_memory())

    def as_pipeline_item(self):
        """The (inputs, labels) pair DeepSpeed's pipeline engine reads."""
        return self.tokens, (self.labels, self.loss_mask)


def make_microbatch(sequences: np.ndarray, eod: Optional[int], eod_mask_loss: bool) -> MicroBatch:
    """[b, s + 1] token ids -> inputs, shifted labels and loss mask."""
    data = torch.from_numpy(np.ascontiguousarray(sequences, dtype=np.int64))
    tokens, labels = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    loss_mask = torch.ones(tokens.shape, dtype=torch.float32)
    if eod_mask_loss and eod is not None:
        loss_mask[tokens == eod] = 0.0
    return MicroBatch(tokens, labels, loss_mask)


def rank_positions(base: int, layout: Layout, dp_rank: int, micro: int) -> np.ndarray:
    """Global positions of micro batch `micro` of `dp_rank` in the global batch at `base`."""
    start = base + (micro * layout.dp + dp_rank) * layout.micro_batch_size
    return np.arange(start, start + layout.micro_batch_size)


class TrainBatches:
    """This rank's micro batches of every training iteration."""

    def __init__(self, streams: List[SequenceStream], blend: DynamicBlend, layout: Layout, dp_rank: int,
                 eod: Optional[int], eod_mask_loss: bool):
        self.streams, self.blend, self.layout, self.dp_rank = streams, blend, layout, dp_rank
        self.eod, self.eod_mask_loss = eod, eod_mask_loss

    def first_position(self, iteration: int) -> int:
        return iteration * self.layout.global_batch_size

    def global_domains(self, iteration: int) -> np.ndarray:
        """The domain of every sample of the iteration's global batch."""
        start = self.first_position(iteration)
        domains, _ = self.blend.lookup(start, start + self.layout.global_batch_size)
        return domains

    def plan(self, iteration: int) -> List[Tuple[np.ndarray, np.ndarray]]:
        """(domain, draw within the domain) of each sample of each of this rank's micro batches:
        the blend's part, cheap, and only ever on the training thread."""
        base = self.first_position(iteration)
        planned = []
        for m in range(self.layout.grad_accumulation_steps):
            positions = rank_positions(base, self.layout, self.dp_rank, m)
            domains, draws = self.blend.lookup(int(positions[0]), int(positions[-1]) + 1)
            planned.append((domains.copy(), draws.copy()))
        return planned

    def load(self, planned: List[Tuple[np.ndarray, np.ndarray]], pin_memory: bool = False) -> List[MicroBatch]:
        """Read the planned sequences: the streams' part (safe on a background thread, which is
        then the only reader of the training streams)."""
        batches = []
        for domains, draws in planned:
            sequences = np.stack([self.streams[d].sample(k) for d, k in zip(domains, draws)])
            batch = make_microbatch(sequences, self.eod, self.eod_mask_loss)
            batches.append(batch.pin_memory() if pin_memory else batch)
        return batches

    def microbatches(self, iteration: int) -> List[MicroBatch]:
        return self.load(self.plan(iteration))


class PrefetchedBatches:
    """TrainBatches with the next iteration read ahead on one background thread."""

    def __init__(self, batches: TrainBatches, pin_memory: bool):
        self.batches, self.pin_memory = batches, pin_memory
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch")
        self._pending: Optional[Tuple[int, Future]] = None

    def prefetch(self, iteration: int) -> None:
        """Start reading `iteration`'s micro batches; call only when the blend will not change
        before that iteration."""
        self._wait()
        planned = self.batches.plan(iteration)
        self._pending = (iteration, self._reader.submit(self.batches.load, planned, self.pin_memory))

    def microbatches(self, iteration: int) -> List[MicroBatch]:
        pending = self._wait()
        if pending is not None and pending[0] == iteration:
            return pending[1].result()
        return self.batches.load(self.batches.plan(iteration), self.pin_memory)

    def _wait(self) -> Optional[Tuple[int, Future]]:
        """Take the pending read, after it finished (the streams have one reader at a time)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[1].exception()  # waits; a failed read raises when its batches are taken
        return pending

    def close(self) -> None:
        self._wait()
        self._reader.shutdown(wait=True)


class TensorParallelSharedBatches:
    """Micro batches read by the first rank of the tensor-parallel group, broadcast to the others.

    Two broadcasts per iteration on the training thread (token ids and labels in one int64
    tensor, the loss masks in another), on the device the step runs on; the peers neither plan
    nor read. Same interface as `PrefetchedBatches`."""

    def __init__(self, reader: Optional[PrefetchedBatches], layout: Layout, seq_length: int, device: torch.device,
                 group, source_rank: int):
        self.reader = reader  # None on the peers
        self.shape = (layout.grad_accumulation_steps, layout.micro_batch_size, seq_length)
        self.device, self.group, self.source_rank = device, group, source_rank

    def prefetch(self, iteration: int) -> None:
        if self.reader is not None:
            self.reader.prefetch(iteration)

    def microbatches(self, iteration: int) -> List[MicroBatch]:
        count, b, s = self.shape
        if self.reader is not None:
            read = [mb.to(self.device) for mb in self.reader.microbatches(iteration)]
            ids = torch.stack([torch.stack([mb.tokens, mb.labels]) for mb in read])
            masks = torch.stack([mb.loss_mask for mb in read])
        else:
            ids = torch.empty((count, 2, b, s), dtype=torch.int64, device=self.device)
            masks = torch.empty((count, b, s), dtype=torch.float32, device=self.device)
        dist.broadcast(ids, self.source_rank, group=self.group)
        dist.broadcast(masks, self.source_rank, group=self.group)
        return [MicroBatch(ids[m, 0], ids[m, 1], masks[m]) for m in range(count)]

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def fixed_microbatches(stream: SequenceStream, rounds: int, layout: Layout, dp_rank: int, eod: Optional[int],
                       eod_mask_loss: bool) -> List[MicroBatch]:
    """This rank's share of the first `rounds` x (micro batch x DP) sequences of a stream (one
    micro batch per rank per round; a global batch is grad-accumulation-steps rounds; cycling
    when the stream is shorter): the same sequences every time, for evaluation."""
    share = layout.micro_batch_size * layout.dp
    batches = []
    for r in range(rounds):
        start = r * share + dp_rank * layout.micro_batch_size
        positions = np.arange(start, start + layout.micro_batch_size) % stream.samples_per_epoch
        batches.append(make_microbatch(np.stack([stream.sample(p) for p in positions]), eod, eod_mask_loss))
    return batches
