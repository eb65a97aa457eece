"""The dynamic blend: which domain every global sample position comes from.

Training consumes global sample positions 0, 1, 2, ... (iteration t consumes
[t * global_batch, (t + 1) * global_batch)). The blend assigns each position a domain and
that domain's draw number, following the mixture weights in effect, by a low-discrepancy
rule (`apportion.Apportioner`): every domain's draws stay within 1 of the integral of its
weight over the positions so far, whatever the weight changes, so a domain of weight 1e-5 is
sampled once every 100,000 positions even if the weights change every few hundred.

Weights may change during training (online mixing), at the first position not yet planned
or at a later one; a change discards the plan after it and carries every domain's deficit
into the new weights. Hence:
- the plan is a pure function of the weight history (position and value of each change),
  so every data-parallel rank derives the same plan without communicating;
- positions before a change keep their domains;
- only positions that are asked for are planned (a batch at a time), so a change wastes
  nothing.

State: the rule's O(k) state at the first unconsumed position, and every domain's draws
there; the plan of positions between that one and the last one asked for is a cache, rebuilt
on resume. Nothing grows with the number of updates. (When the current weights take effect
at a position after the first unconsumed one, the domains of the positions between the two are
saved instead, and the rule's state where the weights take effect.)
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from megatron_dga.data.apportion import Apportioner, check_weights


class DynamicBlend:
    def __init__(self, num_domains: int, initial_weights):
        self.num_domains = num_domains
        self._rule = Apportioner(check_weights(initial_weights, num_domains))
        self._segment_start = 0  # where the current weights took effect
        self._segment_draws = np.zeros(num_domains, dtype=np.int64)  # each domain's draws before it
        # Planned positions [anchor, anchor + len(plan)): their domains and draw numbers.
        self._anchor = 0
        self._anchor_draws = np.zeros(num_domains, dtype=np.int64)
        self._domains = np.zeros(0, dtype=np.int64)
        self._draws = np.zeros(0, dtype=np.int64)

    # ---- weights -------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """The weights in effect from the last change on."""
        return self._rule.weights

    @property
    def _frontier(self) -> int:
        return self._anchor + len(self._domains)

    def set_weights(self, position: int, weights) -> None:
        """Use `weights` from global position `position` on (the first position not yet
        consumed, or later). Positions before it keep their domains."""
        w = check_weights(weights, self.num_domains)
        if position < max(self._segment_start, self._anchor):
            raise ValueError(f"weights can only change at or after position "
                             f"{max(self._segment_start, self._anchor)}, not {position}")
        if np.array_equal(w, self.weights):
            return  # not a change: a new segment would only move the rule's keys
        self._plan_until(position)
        self._forget_plan_from(position)
        self._rule.start_segment(w)
        self._segment_start = position
        self._segment_draws = self.draws_before(position)

    # ---- planning ------------------------------------------------------------------------
    def _plan_until(self, stop: int) -> None:
        n = stop - self._frontier
        if n <= 0:
            return
        domains, picks = self._rule.plan(n)
        self._domains = np.concatenate([self._domains, domains])
        self._draws = np.concatenate([self._draws, self._segment_draws[domains] + picks])

    def _rule_state_at(self, position: int) -> Dict:
        """The rule's state as it was at `position` (between the anchor and the frontier)."""
        state = self._rule.state_dict()
        dropped = self._domains[position - self._anchor:]
        state["picks"] = (np.asarray(state["picks"]) - np.bincount(dropped, minlength=self.num_domains)).tolist()
        state["offset"] -= len(dropped)
        return state

    def _forget_plan_from(self, position: int) -> None:
        """Drop planned positions >= position, and rewind the rule to that position."""
        keep = position - self._anchor
        if keep >= len(self._domains):
            return
        self._rule.load_state_dict(self._rule_state_at(position))
        self._domains, self._draws = self._domains[:keep], self._draws[:keep]

    def _check_not_released(self, position: int) -> None:
        if position < self._anchor:
            raise ValueError(f"positions before {self._anchor} were already consumed and released")

    def lookup(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        """Domains and per-domain draw numbers of positions [start, stop)."""
        self._check_not_released(start)
        self._plan_until(stop)
        lo, hi = start - self._anchor, stop - self._anchor
        return self._domains[lo:hi].copy(), self._draws[lo:hi].copy()

    def draws_before(self, position: int) -> np.ndarray:
        """How many samples each domain has given to positions < position."""
        self._check_not_released(position)
        self._plan_until(position)
        return self._anchor_draws + np.bincount(self._domains[: position - self._anchor], minlength=self.num_domains)

    def release_before(self, position: int) -> None:
        """Forget the plan of positions before `position` (consumed)."""
        if position <= self._anchor:
            return
        self._plan_until(position)
        self._anchor_draws = self.draws_before(position)
        cut = position - self._anchor
        self._domains, self._draws = self._domains[cut:], self._draws[cut:]
        self._anchor = position

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> Dict:
        """O(k) numbers: the rule at the first unconsumed position, and the draws there. The
        rule only knows its current segment: if that starts later, the positions before it are
        saved as planned, with the rule's state at the segment's start."""
        pending = np.zeros(0, dtype=np.int64)
        if self._segment_start > self._anchor:
            self._plan_until(self._segment_start)
            pending = self._domains[: self._segment_start - self._anchor]
        return {
            "rule": self._rule_state_at(self._anchor + len(pending)),
            "pending_domains": pending.tolist(),
            "segment_start": int(self._segment_start),
            "segment_draws": self._segment_draws.tolist(),
            "anchor": int(self._anchor),
            "anchor_draws": self._anchor_draws.tolist(),
        }

    def load_state_dict(self, state: Dict) -> None:
        if "rule" not in state:
            raise ValueError("this checkpoint's blend state is from an older version (a weight history); "
                             "it cannot be resumed exactly by this version")
        if len(state["anchor_draws"]) != self.num_domains:
            raise ValueError(
                f"checkpoint blends {len(state['anchor_draws'])} domains, this run has {self.num_domains}"
            )
        self._rule.load_state_dict(state["rule"])
        self._segment_start = int(state["segment_start"])
        self._segment_draws = np.asarray(state["segment_draws"], dtype=np.int64)
        self._anchor = int(state["anchor"])
        self._anchor_draws = np.asarray(state["anchor_draws"], dtype=np.int64)
        self._domains = np.asarray(state.get("pending_domains", []), dtype=np.int64)
        self._draws = np.zeros(len(self._domains), dtype=np.int64)
        drawn = self._anchor_draws.copy()
        for i, d in enumerate(self._domains):  # each pending position's draw number
            self._draws[i] = drawn[d]
            drawn[d] += 1
