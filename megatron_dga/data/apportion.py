"""Low-discrepancy apportionment: which domain each of a run of positions goes to.

Given weights w on the simplex, position after position, pick one domain each time so that
every domain's picks stay as close as possible to its *target*, the sum of its weights over
the positions so far. The deficit of domain i is target_i - picks_i.

The rule is Tijdeman's (R. Tijdeman, "The chairman assignment problem", Discrete Mathematics
32, 1980): at each position a domain is *eligible* when its deficit, counting this position's
weight, is at least delta = 1 / (2k - 2); among the eligible ones pick the one whose deficit
would reach 1 - delta first at its current weight (the earliest deadline). For weights that
stay fixed it keeps every deficit within 1 - delta < 1; megatron-core's greedy rule (pick the
largest deficit) can fall further behind when the weights change, and restarting any rule at
every change starves domains whose weight times the positions between changes is below 1.

Deficits carry across weight changes: `start_segment(w)` takes the deficits where the last
segment stopped. No online rule can bound the deficit by 1 against weights chosen
adversarially at every position (the bound then grows like log k: Coppersmith et al., "The
optimality of the online greedy algorithm in carpool and chairman assignment problems",
2011); for weights that drift as mixture updates make them, the deficits stay below 1
(`tests/test_blend_at_scale.py`, `bench/blend_replan.py`).

Cost: O(k) to start a segment, O(log k) per position (two heaps: domains waiting to become
eligible, keyed by the first position they are; eligible domains keyed by deadline). State:
O(k) numbers, whatever the number of segments. Picks are a pure function of the state: every
key is computed by one formula from (deficit at the segment start, weight, picks in the
segment), so heaps rebuilt from a saved state continue exactly as the originals would have.
"""

from __future__ import annotations

import heapq
import math
from typing import Dict, Tuple

import numpy as np


def check_weights(weights, num_domains: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (num_domains,) or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"mixture weights must be {num_domains} finite non-negative numbers, got {weights}")
    return w / w.sum()


class Apportioner:
    """Tijdeman's rule over segments of fixed weights, deficits carried from one to the next."""

    def __init__(self, weights):
        w = np.asarray(weights, dtype=np.float64)
        self.num_domains = len(w)
        self.delta = 1.0 / (2 * self.num_domains - 2) if self.num_domains > 1 else 0.0
        self.weights = check_weights(w, self.num_domains)
        self.start_deficit = np.zeros(self.num_domains)  # deficits at the segment's start
        self.picks = np.zeros(self.num_domains, dtype=np.int64)  # picks since the segment's start
        self.offset = 0  # positions since the segment's start
        self._heaps = None

    # ---- state ---------------------------------------------------------------------------
    def deficits(self) -> np.ndarray:
        """target - picks of every domain, at the current position."""
        return self.start_deficit + self.weights * self.offset - self.picks

    def start_segment(self, weights) -> None:
        """Use `weights` from the current position on, carrying every domain's deficit."""
        self.start_deficit = self.deficits()
        self.weights = check_weights(weights, self.num_domains)
        self.picks = np.zeros(self.num_domains, dtype=np.int64)
        self.offset = 0
        self._heaps = None

    def state_dict(self) -> Dict:
        return {"weights": self.weights.tolist(), "start_deficit": self.start_deficit.tolist(),
                "picks": self.picks.tolist(), "offset": int(self.offset)}

    def load_state_dict(self, state: Dict) -> None:
        if len(state["weights"]) != self.num_domains:
            raise ValueError(f"apportionment state over {len(state['weights'])} domains, expected {self.num_domains}")
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        self.start_deficit = np.asarray(state["start_deficit"], dtype=np.float64)
        self.picks = np.asarray(state["picks"], dtype=np.int64)
        self.offset = int(state["offset"])
        self._heaps = None

    # ---- the rule ------------------------------------------------------------------------
    # For domain i with weight w > 0, after c picks in the segment, its deficit at offset q
    # counting that position's weight is D + w (q + 1) - c. It becomes eligible at the first
    # offset where that reaches delta, and its deadline is the (real) offset where it would
    # reach 1 - delta. The same expressions serve numpy arrays and Python floats.
    def _eligible_from(self, deficit, weight, picks):
        return (self.delta - deficit + picks) / weight - 1.0

    def _deadline(self, deficit, weight, picks):
        return (1.0 - self.delta - deficit + picks) / weight - 1.0

    def _build_heaps(self):
        active = np.flatnonzero(self.weights > 0)
        d, w, c = self.start_deficit[active], self.weights[active], self.picks[active]
        eligible = np.ceil(self._eligible_from(d, w, c))
        deadline = self._deadline(d, w, c)
        now = eligible <= self.offset
        ready = list(zip(deadline[now].tolist(), active[now].tolist()))
        waiting = list(zip(eligible[~now].tolist(), active[~now].tolist()))
        heapq.heapify(ready)
        heapq.heapify(waiting)
        self._heaps = (ready, waiting)

    def plan(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        """The domains of the next n positions, and each one's pick number within the segment."""
        if self._heaps is None:
            self._build_heaps()
        ready, waiting = self._heaps
        deficit, weight = self.start_deficit.tolist(), self.weights.tolist()
        picks = self.picks.tolist()
        domains = np.empty(n, dtype=np.int64)
        pick_numbers = np.empty(n, dtype=np.int64)
        push, pop = heapq.heappush, heapq.heappop
        for m in range(n):
            q = self.offset + m
            while waiting and waiting[0][0] <= q:
                i = pop(waiting)[1]
                push(ready, (self._deadline(deficit[i], weight[i], picks[i]), i))
            if not ready:  # only through rounding: the deficits sum to 1 > delta here
                i = pop(waiting)[1]
                push(ready, (self._deadline(deficit[i], weight[i], picks[i]), i))
            i = pop(ready)[1]
            domains[m], pick_numbers[m] = i, picks[i]
            picks[i] += 1
            eligible = math.ceil(self._eligible_from(deficit[i], weight[i], picks[i]))
            if eligible <= q + 1:
                push(ready, (self._deadline(deficit[i], weight[i], picks[i]), i))
            else:
                push(waiting, (eligible, i))
        self.picks = np.asarray(picks, dtype=np.int64)
        self.offset += n
        return domains, pick_numbers
