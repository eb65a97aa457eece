"""Micro batches for this data-parallel rank, read from the blend and the domain streams.

Iteration t consumes global sample positions [t * G, (t + 1) * G) (G: global batch). As in
Megatron's pretraining sampler, micro batch m of data-parallel rank r holds positions
t * G + (m * DP + r) * B + [0, B) (B: micro batch). Batches are read synchronously when
needed, never prefetched, so a weight change is always seen by the very next batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

from megatron_dga.data.blend import DynamicBlend
from megatron_dga.data.sequences import SequenceStream
from megatron_dga.parallel.layout import Layout


@dataclass
class MicroBatch:
    tokens: torch.Tensor  # [b, s] inputs
    labels: torch.Tensor  # [b, s] next tokens
    loss_mask: torch.Tensor  # [b, s] 1.0 where the loss counts

    def to(self, device) -> "MicroBatch":
        return MicroBatch(self.tokens.to(device), self.labels.to(device), self.loss_mask.to(device))

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

    def read(self, positions: np.ndarray) -> np.ndarray:
        domains, draws = self.blend.lookup(int(positions[0]), int(positions[-1]) + 1)
        offset = positions - positions[0]
        return np.stack([self.streams[d].sample(k) for d, k in zip(domains[offset], draws[offset])])

    def microbatches(self, iteration: int) -> List[MicroBatch]:
        base = self.first_position(iteration)
        return [
            make_microbatch(self.read(rank_positions(base, self.layout, self.dp_rank, m)), self.eod,
                            self.eod_mask_loss)
            for m in range(self.layout.grad_accumulation_steps)
        ]


def fixed_microbatches(stream: SequenceStream, count: int, layout: Layout, dp_rank: int, eod: Optional[int],
                       eod_mask_loss: bool) -> List[MicroBatch]:
    """This rank's share of the first `count` global batches of a stream (cycling when the
    stream is shorter): the same sequences every time, for evaluation."""
    batches = []
    for iteration in range(count):
        base = iteration * layout.global_batch_size
        for m in range(layout.grad_accumulation_steps):
            positions = rank_positions(base, layout, dp_rank, m) % stream.samples_per_epoch
            batches.append(make_microbatch(np.stack([stream.sample(p) for p in positions]), eod, eod_mask_loss))
    return batches
