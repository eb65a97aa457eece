"""The dynamic blend: which domain every global sample position comes from.

Training consumes global sample positions 0, 1, 2, ... (iteration t consumes
[t * global_batch, (t + 1) * global_batch)). The blend assigns each position a domain and
that domain's draw number, following the mixture weights in effect, with megatron-core's
greedy `build_blending_indices` (each position goes to the domain furthest behind its
target share), so every batch follows the weights closely, without sampling noise.

Weights may change during training (online mixing). The plan is cut into chunks whose
boundaries are the multiples of `chunk_size` and the positions where weights changed; each
chunk is planned greedily from its own start with the weights in effect there, continuing
every domain's draw count. Hence:
- the plan is a pure function of the weight history (position and value of each change),
  so every data-parallel rank derives the same plan without communicating;
- a change at position p re-plans only positions >= p: the greedy rule is online, so the
  part of a chunk before p is the same whether planned before or after the change;
- planning work per change is at most one chunk (O(chunk_size x domains) in C++).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
from megatron.core.datasets.helpers_cpp import build_blending_indices

DEFAULT_CHUNK_SIZE = 1 << 16


class _Chunk:
    """Planned positions [start, stop): their domains, each one's draw number within the
    chunk, and each domain's draws before the chunk."""

    __slots__ = ("start", "stop", "domain", "local_draw", "draws_before")

    def __init__(self, start, stop, domain, local_draw, draws_before):
        self.start, self.stop = start, stop
        self.domain, self.local_draw, self.draws_before = domain, local_draw, draws_before

    def truncated(self, stop: int) -> "_Chunk":
        n = stop - self.start
        return _Chunk(self.start, stop, self.domain[:n], self.local_draw[:n], self.draws_before)

    def draws_until(self, position: int) -> np.ndarray:
        """Each domain's draws before `position` (start <= position <= stop)."""
        counts = np.bincount(self.domain[: position - self.start], minlength=len(self.draws_before))
        return self.draws_before + counts


def greedy_blend(weights: np.ndarray, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Domain of n consecutive positions and each one's draw number within them, by
    megatron-core's greedy rule, over the domains of positive weight only: the rule treats
    positions 0 and 1 alike, and at position 1 a zero-weight domain would tie and be picked."""
    active = np.flatnonzero(weights > 0)
    choice = np.zeros(n, dtype=np.int16)
    local_draw = np.zeros(n, dtype=np.int64)
    build_blending_indices(choice, local_draw, np.ascontiguousarray(weights[active]), len(active), n, False)
    return active[choice].astype(np.int16), local_draw


def check_weights(weights, num_domains: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_domains,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"mixture weights must be {num_domains} finite non-negative numbers, got {weights}")
    return w / w.sum()


class DynamicBlend:
    def __init__(self, num_domains: int, initial_weights, chunk_size: int = DEFAULT_CHUNK_SIZE):
        if num_domains > np.iinfo(np.int16).max:
            raise ValueError(f"at most {np.iinfo(np.int16).max} domains, got {num_domains}")
        self.num_domains = num_domains
        self.chunk_size = int(chunk_size)
        # (position, weights) of every change, the first at position 0.
        self.history: List[Tuple[int, np.ndarray]] = [(0, check_weights(initial_weights, num_domains))]
        # Planning resumes from an anchor: a chunk start and every domain's draws before it.
        self._anchor = 0
        self._anchor_draws = np.zeros(num_domains, dtype=np.int64)
        self._chunks: List[_Chunk] = []

    # ---- weights -------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        return self.history[-1][1]

    def weights_at(self, position: int) -> np.ndarray:
        current = self.history[0][1]
        for start, w in self.history:
            if start > position:
                break
            current = w
        return current

    def set_weights(self, position: int, weights) -> None:
        """Use `weights` from global position `position` on (the first position not yet
        consumed). Positions before it keep their domains."""
        w = check_weights(weights, self.num_domains)
        last = self.history[-1][0]
        if position < last:
            raise ValueError(f"weights can only change at or after position {last}, not {position}")
        if np.array_equal(w, self.history[-1][1]):
            return  # not a change: a new chunk here would only restart the greedy pattern
        if position == last:
            self.history[-1] = (position, w)
        else:
            self.history.append((position, w))
        self._drop_plan_from(position)

    # ---- planning ------------------------------------------------------------------------
    def _next_boundary(self, start: int) -> int:
        stop = (start // self.chunk_size + 1) * self.chunk_size
        for change, _ in self.history:
            if start < change < stop:
                stop = change
        return stop

    def _drop_plan_from(self, position: int) -> None:
        """Forget planned positions >= position, keeping the prefix of the chunk holding it."""
        kept = []
        for chunk in self._chunks:
            if chunk.stop <= position:
                kept.append(chunk)
            elif chunk.start < position:
                kept.append(chunk.truncated(position))
        self._chunks = kept

    def _frontier(self) -> Tuple[int, np.ndarray]:
        """First unplanned position and each domain's draws before it."""
        if not self._chunks:
            return self._anchor, self._anchor_draws
        last = self._chunks[-1]
        return last.stop, last.draws_until(last.stop)

    def _ensure_planned(self, stop: int) -> None:
        start, draws = self._frontier()
        while start < stop:
            chunk_stop = self._next_boundary(start)
            n = chunk_stop - start
            domain, local_draw = greedy_blend(self.weights_at(start), n)
            chunk = _Chunk(start, chunk_stop, domain, local_draw, draws.copy())
            self._chunks.append(chunk)
            start, draws = chunk_stop, chunk.draws_until(chunk_stop)

    def _check_not_released(self, position: int) -> None:
        if position < self._anchor:
            raise ValueError(f"positions before {self._anchor} were already consumed and released")

    def lookup(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        """Domains and per-domain draw numbers of positions [start, stop)."""
        self._check_not_released(start)
        self._ensure_planned(stop)
        domains, draws = [], []
        for chunk in self._chunks:
            lo, hi = max(start, chunk.start), min(stop, chunk.stop)
            if lo < hi:
                domain = chunk.domain[lo - chunk.start:hi - chunk.start].astype(np.int64)
                domains.append(domain)
                draws.append(chunk.draws_before[domain] + chunk.local_draw[lo - chunk.start:hi - chunk.start])
        return np.concatenate(domains), np.concatenate(draws)

    def draws_before(self, position: int) -> np.ndarray:
        """How many samples each domain has given to positions < position."""
        self._check_not_released(position)
        self._ensure_planned(position + 1)
        for chunk in self._chunks:
            if chunk.start <= position < chunk.stop:
                return chunk.draws_until(position)
        return self._anchor_draws.copy()

    def release_before(self, position: int) -> None:
        """Free the plan of chunks that end at or before `position` (already consumed)."""
        while self._chunks and self._chunks[0].stop <= position:
            first = self._chunks.pop(0)
            self._anchor, self._anchor_draws = first.stop, first.draws_until(first.stop)

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> Dict:
        return {
            "chunk_size": self.chunk_size,
            "history": [(int(p), w.tolist()) for p, w in self.history],
            "anchor": int(self._anchor),
            "anchor_draws": self._anchor_draws.tolist(),
        }

    def load_state_dict(self, state: Dict) -> None:
        if state["chunk_size"] != self.chunk_size:
            raise ValueError(f"blend chunk size {state['chunk_size']} != {self.chunk_size}")
        if len(state["anchor_draws"]) != self.num_domains:
            raise ValueError(
                f"checkpoint blends {len(state['anchor_draws'])} domains, this run has {self.num_domains}"
            )
        self.history = [(int(p), np.asarray(w, dtype=np.float64)) for p, w in state["history"]]
        self._anchor = int(state["anchor"])
        self._anchor_draws = np.asarray(state["anchor_draws"], dtype=np.int64)
        self._chunks = []
