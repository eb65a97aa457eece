"""DGA's default update interval: as often as the probes' share of the compute allows.

An update probes every source and the specific set, `probe_microbatches` micro batches each
per rank: (sources + 1) x probe_microbatches forward-backward passes, against
`train_microbatches` per rank for each iteration of training. A fixed interval makes that share
depend on the batch: 5% at 32 micro batches per iteration and 16 sources with T_r = 10, 35% at 2
micro batches and 6 sources. The default interval is instead the smallest multiple of
UPDATE_INTERVAL_STEP that keeps the share within --dga-probe-budget.

Where the interval is above 10, the first --dga-early-fraction of the run (a third) updates every 10
iterations instead, on probe micro batches cut to 10 / T_r of training's sequences: the same probe
cost. Small frequent probes move the weights to the target's domains sooner; whole probes at the
longer interval wander less once they are there (docs/dga.md, "Against the best fixed mixture").
Where 10 / T_r of a micro batch is less than one sequence (many sources, small batches), the
sources' probes hold one sequence's tokens, the specific set's keeps training's micro batch (every
score is a dot product with its gradient, so its noise enters all of them), and they come as often
as that cost allows. A source's tokens are the prefixes of a micro batch of its sequences where they
fit (`prefix_tokens`, --dga-probe-prefixes): as many sequences as a whole probe, for one's tokens.
Where whole probes would then leave fewer than MIN_LATE_UPDATES updates after the early phase, these
probes run to the end of the run: over 16 bases of 57 clusters, two updates on whole probes kept
0.47 of the gain of whole probes every 10, one-sequence probes every 20 iterations 0.68, 0.76 with
the specific set's probe kept whole, and 0.89 with prefixes (docs/results-at-scale.md, large k).
They cost at most what whole probes would (16 + 8 sequences' tokens every 20 iterations is 0.79 of
17 x 8 sequences every 90), so running them to the end keeps within the budget despite a small
probe's higher cost per sequence.
Probes cut to 10 / T_r of a micro batch, one sequence or more (the specific set's alike), cost as
many sequences as whole ones, at 1.4x per sequence on these CPUs (docs/dga.md, Cost), and give way
to whole probes after the early phase, as measured.

Fewer updates move the weights less: the update's step (--dga-lr and --dga-step-clip, read as the
step at 10 iterations) is multiplied by sqrt(T_r / 10) at a derived interval T_r, so that the
random walk the probe noise makes has the same spread per iteration as at 10 (a doubled step at
40 iterations: docs/dga.md, "Against the best fixed mixture").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

UPDATE_INTERVAL_STEP = 10  # updates on multiples of 10 iterations, where logging and evaluation usually fall
DEFAULT_PROBE_BUDGET = 0.1
DEFAULT_EARLY_FRACTION = 1 / 3  # where measured: small frequent probes lead until about a third of the run
MIN_LATE_UPDATES = 3  # fewer whole-probe updates after the early phase: it runs to the end instead


def check_probe_budget(budget: float) -> None:
    if not (math.isfinite(budget) and budget > 0):
        raise ValueError(f"--dga-probe-budget {budget} must be a positive number")


def probe_share(num_sources: int, probe_microbatches: int, train_microbatches: int, update_interval: int) -> float:
    """Probe passes per update over training passes between updates."""
    return (num_sources + 1) * probe_microbatches / (update_interval * train_microbatches)


def auto_update_interval(num_sources: int, probe_microbatches: int, train_microbatches: int, budget: float) -> int:
    """The smallest multiple of UPDATE_INTERVAL_STEP whose probe share is at most `budget`."""
    check_probe_budget(budget)
    needed = probe_share(num_sources, probe_microbatches, train_microbatches, 1) / budget
    steps = max(1, math.ceil(needed / UPDATE_INTERVAL_STEP - 1e-9))  # 1e-9: a share exactly at the budget fits
    return steps * UPDATE_INTERVAL_STEP


def step_factor(update_interval: int) -> float:
    """What a derived interval multiplies the step by: sqrt(T_r / UPDATE_INTERVAL_STEP)."""
    return math.sqrt(update_interval / UPDATE_INTERVAL_STEP)


@dataclass(frozen=True)
class ProbeCost:
    """What DGA's derived schedule follows, per rank: training's micro batches per iteration, the
    probe passes per source (in training micro batches), training's micro batch size where an early
    phase may cut the probes below it (else None), the run's length in iterations, and the tokens of
    training's sequences where a probe may hold their prefixes (else None), in multiples of
    `token_multiple`."""
    train_microbatches: int
    probe_passes: float
    cuttable_micro_batch_size: Optional[int] = None
    train_iters: Optional[int] = None
    seq_length: Optional[int] = None
    token_multiple: int = 1


def early_iters_of(train_iters: int, fraction: float) -> int:
    """`fraction` of the run, to a multiple of UPDATE_INTERVAL_STEP."""
    return int(round(train_iters * fraction / UPDATE_INTERVAL_STEP)) * UPDATE_INTERVAL_STEP


def whole_updates_after(interval: int, train_iters: int, fraction: float) -> int:
    """Updates on whole probes every `interval` iterations after `fraction` of the run."""
    return train_iters // interval - early_iters_of(train_iters, fraction) // interval


@dataclass(frozen=True)
class EarlyPhase:
    """DGA's updates before iteration `iters`: every `interval` iterations, on probes of
    `micro_batch_size` sequences per rank for each source, and `specific_micro_batch_size` for the
    specific set (None: the sources' size); the sources' sequences cut to their first
    `sequence_tokens` tokens (None: whole)."""
    iters: int
    interval: int
    micro_batch_size: int
    specific_micro_batch_size: Optional[int] = None
    sequence_tokens: Optional[int] = None


def prefix_tokens(seq_length: Optional[int], micro_batch_size: int, token_multiple: int = 1) -> Optional[int]:
    """Tokens of each of `micro_batch_size` prefixes that together hold one sequence's tokens, a multiple
    of `token_multiple` (sequence parallelism splits the sequence over TP ranks); None where there is
    no such prefix shorter than a sequence."""
    if not seq_length or micro_batch_size <= 1:
        return None
    tokens = seq_length // micro_batch_size // token_multiple * token_multiple
    return tokens if tokens >= 1 else None


def early_phase(interval: int, num_sources: int, micro_batch_size: Optional[int], train_iters: Optional[int],
                fraction: float, seq_length: Optional[int] = None, token_multiple: int = 1) -> Optional[EarlyPhase]:
    """The early phase at a derived `interval`, over `fraction` of the run: probes cut to
    UPDATE_INTERVAL_STEP / interval of a micro batch every UPDATE_INTERVAL_STEP iterations, or, below
    one sequence, probes of one sequence's tokens for the sources beside a whole one of the specific
    set, at the interval that costs no more, over all of the run where whole probes would leave fewer
    than MIN_LATE_UPDATES updates after `fraction`. The sources' one sequence's tokens are the
    prefixes of a micro batch of `seq_length`-token sequences where `seq_length` is given
    (`prefix_tokens`), else one whole sequence. None where there is none to have."""
    if interval <= UPDATE_INTERVAL_STEP or not micro_batch_size or not train_iters or fraction <= 0:
        return None
    sequences = micro_batch_size * UPDATE_INTERVAL_STEP // interval
    every, specific, tokens = UPDATE_INTERVAL_STEP, None, None
    iters = early_iters_of(train_iters, fraction)
    if sequences < 1:  # a probe holds a sequence's tokens at least: it comes less often, at the same cost or less
        specific, tokens = micro_batch_size, prefix_tokens(seq_length, micro_batch_size, token_multiple)
        sequences = 1 if tokens is None else micro_batch_size
        per_update = num_sources + specific  # in sequences' tokens, against (num_sources + 1) x micro_batch_size
        every_steps = interval * per_update / ((num_sources + 1) * micro_batch_size) / UPDATE_INTERVAL_STEP
        every = math.ceil(every_steps - 1e-9) * UPDATE_INTERVAL_STEP
        if whole_updates_after(interval, train_iters, fraction) < MIN_LATE_UPDATES:
            iters = train_iters
    if every >= interval or iters <= every:
        return None
    return EarlyPhase(iters, every, sequences, specific, tokens)
