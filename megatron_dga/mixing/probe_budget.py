"""DGA's default update interval: as often as the probes' share of the compute allows.

An update probes every source and the specific set, `probe_microbatches` micro batches each
per rank: (sources + 1) x probe_microbatches forward-backward passes, against
`train_microbatches` per rank for each iteration of training. A fixed interval makes that share
depend on the batch: 5% at 32 micro batches per iteration and 16 sources with T_r = 10, 35% at 2
micro batches and 6 sources. The default interval is instead the smallest multiple of
UPDATE_INTERVAL_STEP that keeps the share within --dga-probe-budget.

Where training's micro batch would put the interval above 10, the probes are cut first: a probe
micro batch of fewer sequences than training's (down to a quarter of it), so that the same budget
updates every 10 iterations. More frequent probes on fewer sequences did better than rarer ones
on more at every scale measured (docs/dga.md, "Against the best fixed mixture"). Not under
pipeline parallelism, nor when the probe's size is given (--dga-probe-batch-size,
--dga-probe-microbatches): there the interval grows instead.

Fewer updates move the weights less: the update's step (--dga-lr and --dga-step-clip, read as the
step at 10 iterations) is multiplied by sqrt(T_r / 10) at a derived interval T_r, so that the
random walk the probe noise makes has the same spread per iteration as at 10 (a doubled step at
40 iterations: docs/dga.md, "Against the best fixed mixture").
"""

from __future__ import annotations

import math

UPDATE_INTERVAL_STEP = 10  # updates on multiples of 10 iterations, where logging and evaluation usually fall
DEFAULT_PROBE_BUDGET = 0.1
SMALLEST_PROBE_FRACTION = 4  # a probe micro batch is cut to no fewer than 1/4 of training's sequences: the cut measured


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


def probe_sequences(num_sources: int, train_microbatches: int, micro_batch_size: int, budget: float) -> int:
    """Sequences per rank in the probe micro batch of each source: as many as fit the budget with an
    update every UPDATE_INTERVAL_STEP iterations, at most training's micro batch and at least a
    SMALLEST_PROBE_FRACTION of it."""
    check_probe_budget(budget)
    fits = math.floor(budget * UPDATE_INTERVAL_STEP * train_microbatches * micro_batch_size / (num_sources + 1) + 1e-9)
    return min(micro_batch_size, max(fits, math.ceil(micro_batch_size / SMALLEST_PROBE_FRACTION)))
