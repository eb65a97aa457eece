"""The data DGA's probes read: micro batches of each source and of the specific set.

DGA's score is the first-order effect of the next training step's gradient on domain i, so a
probe reads what that step would read: the sequences just ahead of the training position in
domain i's own training stream. A probe of domain i starts at the later of the domain's
training draws so far and the end of its previous probe, and moves that cursor on: it never
re-reads a sequence it probed, and reads a sequence of the current epoch that training has not
reached, or, in a later epoch, a repeated one exactly as training would (a domain read many
times over is probed on text the model has seen, as it is trained on it). Probes read without
moving the training position: the k-th draw of a stream is a pure function of (seed, domain,
k). The specific set has a stream of its own. At each update each source (a domain, or a base
distribution over domains) gets `probe_microbatches x DP` micro batches, one share per
data-parallel rank, exactly as a training batch is split (micro batches of training's size, or
fewer sequences when --dga-probe-batch-size asks for less than one micro batch per rank, or in the
early phase of a derived schedule, --dga-early-fraction, where the specific set's may keep
training's size beside sources of one sequence's tokens: one sequence, or, with
--dga-probe-prefixes, the first seq-length / micro-batch-size tokens of a micro batch of sequences).

A base distribution P_j spreads its sequences over its domains by the same low-discrepancy
rule as the training blend, with a state that persists from one update to the next: over
updates, every domain of P_j is probed in proportion to its weight in P_j (a rule restarted
at every update would always probe the same top domains). Counters of probe draws and these
states are part of the checkpoint, so a resumed run probes the same sequences.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from megatron_dga.data.apportion import Apportioner
from megatron_dga.data.batches import MicroBatch, make_microbatch
from megatron_dga.data.sequences import SequenceStream
from megatron_dga.parallel.layout import Layout


class BaseSampler:
    """The domains of a base distribution's probe sequences, update after update."""

    def __init__(self, distribution: np.ndarray):
        self.support = np.flatnonzero(distribution > 0)
        self._rule = Apportioner(distribution[self.support]) if len(self.support) > 1 else None

    def next_block(self, n: int) -> np.ndarray:
        if self._rule is None:
            return np.full(n, self.support[0], dtype=np.int64)
        return self.support[self._rule.plan(n)[0]]

    def state_dict(self) -> Optional[Dict]:
        return None if self._rule is None else self._rule.state_dict()

    def load_state_dict(self, state: Optional[Dict]) -> None:
        if self._rule is not None:
            self._rule.load_state_dict(state)


class ProbeData:
    def __init__(self, training_streams: List[SequenceStream], specific, bases: np.ndarray, layout: Layout,
                 dp_rank: int, probe_microbatches: int, eod: Optional[int], eod_mask_loss: bool,
                 micro_batch_size: Optional[int] = None):
        self.streams, self.specific, self.bases = training_streams, specific, bases
        self.layout, self.dp_rank = layout, dp_rank
        self.probe_microbatches = probe_microbatches
        # Sequences per probe micro batch: training's, or fewer (--dga-probe-batch-size below micro x DP).
        self.micro_batch_size = layout.micro_batch_size if micro_batch_size is None else micro_batch_size
        self.eod, self.eod_mask_loss = eod, eod_mask_loss
        self._update_size = self.micro_batch_size  # this update's: an early phase may cut it
        self._specific_size = self.micro_batch_size  # the specific set's in this update
        self._tokens = None  # the sources' probe sequences' prefix in this update (None: whole)
        self.domain_draws = np.zeros(len(training_streams), dtype=np.int64)  # each domain's probe cursor
        self.specific_draws = 0
        self.samplers = [BaseSampler(row) for row in bases]
        self._plan = None  # (source domains, draw numbers, counters after) of the current update

    @property
    def num_sources(self) -> int:
        return len(self.bases)

    @property
    def block(self) -> int:
        """Sequences per source in this update, over all data-parallel ranks."""
        return self._over_ranks(self._update_size)

    def _over_ranks(self, micro_batch_size: int) -> int:
        """Sequences in this update's probe micro batches of `micro_batch_size`, over all ranks."""
        return self.probe_microbatches * self.layout.dp * micro_batch_size

    def _rank_slices(self, mbs: int):
        for m in range(self.probe_microbatches):
            start = (m * self.layout.dp + self.dp_rank) * mbs
            yield slice(start, start + mbs)

    def begin_update(self, training_draws: Optional[np.ndarray] = None, micro_batch_size: Optional[int] = None,
                     specific_micro_batch_size: Optional[int] = None, sequence_tokens: Optional[int] = None) -> None:
        """Plan this update's probe sequences: for every source, `block` (domain, draw) pairs,
        each domain's draws from max(its training draws so far, its probe cursor) on.
        `micro_batch_size`: this update's probe micro batches, when cut below the usual;
        `specific_micro_batch_size`: the specific set's, where not the same;
        `sequence_tokens`: the sources' sequences are cut to their first that many tokens."""
        self._update_size = self.micro_batch_size if micro_batch_size is None else micro_batch_size
        self._tokens = sequence_tokens
        self._specific_size = self._update_size if specific_micro_batch_size is None else specific_micro_batch_size
        domains = np.stack([sampler.next_block(self.block) for sampler in self.samplers])
        flat = domains.reshape(-1)
        draws = np.empty_like(flat)
        counters = self.domain_draws.copy()
        if training_draws is not None:
            counters = np.maximum(counters, np.asarray(training_draws, dtype=np.int64))
        for position, d in enumerate(flat):  # draws continue each domain's probe stream
            draws[position] = counters[d]
            counters[d] += 1
        self._plan = (domains, draws.reshape(domains.shape), counters)

    def source_microbatches(self, source: int) -> List[MicroBatch]:
        domains, draws, _ = self._plan
        end = None if self._tokens is None else self._tokens + 1  # inputs and their shifted labels
        return [
            make_microbatch(np.stack([self.streams[d].sample(k)[:end]
                                      for d, k in zip(domains[source, s], draws[source, s])]),
                            self.eod, self.eod_mask_loss)
            for s in self._rank_slices(self._update_size)
        ]

    def specific_microbatches(self) -> List[MicroBatch]:
        return [
            make_microbatch(np.stack([self.specific.sample(self.specific_draws + i)
                                      for i in range(s.start, s.stop)]), self.eod, self.eod_mask_loss)
            for s in self._rank_slices(self._specific_size)
        ]

    def end_update(self) -> None:
        """Advance the probe streams past this update's sequences."""
        self.domain_draws = self._plan[2]
        self.specific_draws += self._over_ranks(self._specific_size)
        self._plan = None
        self._update_size = self._specific_size = self.micro_batch_size
        self._tokens = None

    def state_dict(self) -> Dict:
        return {"domain_draws": self.domain_draws.tolist(), "specific_draws": int(self.specific_draws),
                "base_samplers": [sampler.state_dict() for sampler in self.samplers]}

    def load_state_dict(self, state: Dict) -> None:
        self.domain_draws = np.asarray(state["domain_draws"], dtype=np.int64)
        self.specific_draws = int(state["specific_draws"])
        for sampler, sampler_state in zip(self.samplers, state["base_samplers"]):
            sampler.load_state_dict(sampler_state)
        self._plan = None
