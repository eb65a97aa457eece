"""The data DGA's probes read: micro batches of each source and of the specific set.

Probes never touch the training data position: every domain has a second, independently
seeded stream of its training sequences for probes, and the specific set has its own. At
update u each source (a domain, or a base distribution over domains) gets
`probe_microbatches x DP` micro batches, one share per data-parallel rank, exactly as a
training batch is split; a base distribution's sequences are spread over its domains with
the same greedy rule as training batches. Counters of probe draws are part of the state, so
a resumed run probes the same sequences.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from megatron_dga.data.batches import MicroBatch, make_microbatch
from megatron_dga.data.blend import greedy_blend
from megatron_dga.data.sequences import SequenceStream
from megatron_dga.parallel.layout import Layout

PROBE_STREAM = 1  # seed-key tag of probe streams (training streams have none)


class ProbeData:
    def __init__(self, probe_streams: List[SequenceStream], specific, bases: np.ndarray, layout: Layout,
                 dp_rank: int, probe_microbatches: int, eod: Optional[int], eod_mask_loss: bool):
        self.streams, self.specific, self.bases = probe_streams, specific, bases
        self.layout, self.dp_rank = layout, dp_rank
        self.probe_microbatches = probe_microbatches
        self.eod, self.eod_mask_loss = eod, eod_mask_loss
        # Sequences per source and per update, over all data-parallel ranks.
        self.block = probe_microbatches * layout.dp * layout.micro_batch_size
        self.domain_draws = np.zeros(len(probe_streams), dtype=np.int64)
        self.specific_draws = 0
        self._plan = None  # (source domains, draw numbers) of the current update

    @property
    def num_sources(self) -> int:
        return len(self.bases)

    def _rank_slices(self):
        mbs = self.layout.micro_batch_size
        for m in range(self.probe_microbatches):
            start = (m * self.layout.dp + self.dp_rank) * mbs
            yield slice(start, start + mbs)

    def begin_update(self) -> None:
        """Plan this update's probe sequences: for every source, `block` (domain, draw) pairs."""
        domains = np.zeros((self.num_sources, self.block), dtype=np.int16)
        for j, weights in enumerate(self.bases):
            domains[j] = greedy_blend(weights, self.block)[0]
        flat = domains.reshape(-1).astype(np.int64)
        draws = np.empty_like(flat)
        counters = self.domain_draws.copy()
        for position, d in enumerate(flat):  # draws continue each domain's probe stream
            draws[position] = counters[d]
            counters[d] += 1
        self._plan = (domains.astype(np.int64), draws.reshape(domains.shape), counters)

    def source_microbatches(self, source: int) -> List[MicroBatch]:
        domains, draws, _ = self._plan
        return [
            make_microbatch(np.stack([self.streams[d].sample(k) for d, k in zip(domains[source, s], draws[source, s])]),
                            self.eod, self.eod_mask_loss)
            for s in self._rank_slices()
        ]

    def specific_microbatches(self) -> List[MicroBatch]:
        return [
            make_microbatch(np.stack([self.specific.sample(self.specific_draws + i)
                                      for i in range(s.start, s.stop)]), self.eod, self.eod_mask_loss)
            for s in self._rank_slices()
        ]

    def end_update(self) -> None:
        """Advance the probe streams past this update's sequences."""
        self.domain_draws = self._plan[2]
        self.specific_draws += self.block
        self._plan = None

    def state_dict(self) -> Dict:
        return {"domain_draws": self.domain_draws.tolist(), "specific_draws": int(self.specific_draws)}

    def load_state_dict(self, state: Dict) -> None:
        self.domain_draws = np.asarray(state["domain_draws"], dtype=np.int64)
        self.specific_draws = int(state["specific_draws"])
