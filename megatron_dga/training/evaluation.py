"""Validation loss of every domain (and of extra held-out sets, such as the specific set).

Each set's evaluation batches are fixed once: the first sequences of its validation split in
document order, split across data-parallel ranks as training batches are. So every evaluation
of a run, and of runs with other parallel layouts, scores the same sequences. As in Megatron,
`--eval-iters` global batches are evaluated in all: the generic domains share them (at least one
global batch each, so that every domain's loss is measured, on the same sequences in every
layout); an extra held-out set (the specific set) gets `--eval-iters` global batches of its own.
"""

from __future__ import annotations

from typing import Dict, List, Optional


from megatron_dga.data.batches import MicroBatch, fixed_microbatches
from megatron_dga.data.sequences import SequenceStream
from megatron_dga.parallel.layout import Layout


class Evaluator:
    def __init__(self, sets: Dict[str, SequenceStream], layout: Layout, dp_rank: int, eval_iters: int,
                 eod: Optional[int], eod_mask_loss: bool, shared: Optional[List[str]] = None):
        """`sets`: name -> validation stream; names become `lm loss validation/<name>`. The sets
        named in `shared` (the generic domains) share the `eval_iters` global batches."""
        shared = [name for name in (shared or []) if name in sets]
        global_batches = {name: eval_iters for name in sets}
        for i, name in enumerate(shared):
            global_batches[name] = max(1, eval_iters // len(shared) + (1 if i < eval_iters % len(shared) else 0))
        rounds_per_batch = layout.grad_accumulation_steps  # one micro batch per rank per round
        self.batches: Dict[str, List[MicroBatch]] = {
            name: fixed_microbatches(stream, global_batches[name] * rounds_per_batch, layout, dp_rank, eod,
                                     eod_mask_loss)
            for name, stream in sets.items()
        }

    @property
    def names(self) -> List[str]:
        return list(self.batches)

    def evaluate(self, engine, names: Optional[List[str]] = None) -> Dict[str, float]:
        """Loss per set; every rank calls this (the engine's collectives need all of them)."""
        return {name: engine.eval_loss(self.batches[name]) for name in (names or self.names)}


def overall_loss(losses: Dict[str, float], domain_names: List[str], weights=None) -> Optional[float]:
    """`lm loss validation`: the loss of the blended validation set, as Megatron reports it: each
    generic domain's validation loss weighted by the blend (renormalised over the domains that
    have a validation split); the unweighted mean without weights."""
    pairs = [(losses[n], 1.0 if weights is None else float(weights[i])) for i, n in enumerate(domain_names)
             if n in losses]
    total = sum(w for _, w in pairs)
    if not pairs or total <= 0:
        return None
    return float(sum(loss * w for loss, w in pairs) / total)
