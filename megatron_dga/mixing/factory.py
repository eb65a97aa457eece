"""Build the mixing algorithm named by --mixing."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from megatron_dga.config import MixingConfig
from megatron_dga.files import read_json
from megatron_dga.mixing.base import MixingAlgorithm, normalise, parse_weight_spec
from megatron_dga.mixing.dga import DGAHyperparameters, DGAMixing, natural_source_weights
from megatron_dga.mixing.importance import ImportanceMixing, read_histogram
from megatron_dga.mixing.probe_budget import (DEFAULT_EARLY_FRACTION, DEFAULT_PROBE_BUDGET, UPDATE_INTERVAL_STEP,
                                              EarlyPhase, ProbeCost, auto_update_interval, early_phase, probe_share,
                                              step_factor, whole_updates_after)
from megatron_dga.mixing.static import NaturalMixing, StaticMixing, UniformMixing


def load_base_distributions(path: str, num_domains: int) -> np.ndarray:
    """An N x k matrix from .npy or JSON (a list of rows, or {"bases": rows})."""
    flag = "--dga-base-distributions"
    raw = None if path.endswith(".npy") else read_json(path, flag)
    try:
        if raw is None:
            matrix = np.load(path)
        else:
            matrix = np.asarray(raw["bases"] if isinstance(raw, dict) else raw, dtype=np.float64)
    except FileNotFoundError:
        raise ValueError(f"{flag}: file not found: {path}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{flag} {path}: cannot read an N x k matrix ({e})") from None
    if matrix.ndim != 2 or matrix.shape[1] != num_domains:
        raise ValueError(f"{flag} {path}: expected N x {num_domains}, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)) or np.any(matrix < 0) or np.any(matrix.sum(axis=1) <= 0):
        raise ValueError(f"{flag} {path}: rows must be non-negative and not all zero")
    return matrix / matrix.sum(axis=1, keepdims=True)


def dga_schedule(config: MixingConfig, num_sources: int, microbatches, notes: List[str]):
    """(update interval, what the step is multiplied by, early phase or None): --dga-update-interval
    as given, or the interval --dga-probe-budget allows with the step scaled to it, and, above 10
    iterations, an early phase every 10 on cut probes (`probe_budget.early_phase`: its iterations and
    probe sequences per rank). `microbatches`: a ProbeCost, or (training micro batches per iteration,
    probe passes per source in training micro batches) on each rank."""
    if config.dga_update_interval is not None:
        return config.dga_update_interval, 1.0, None
    if microbatches is None:
        raise ValueError("--dga-update-interval: not given, and no batch sizes to derive it from")
    cost = microbatches if isinstance(microbatches, ProbeCost) else ProbeCost(*microbatches)
    train, probe = cost.train_microbatches, cost.probe_passes
    budget = DEFAULT_PROBE_BUDGET if config.dga_probe_budget is None else config.dga_probe_budget
    interval = auto_update_interval(num_sources, probe, train, budget)
    factor = step_factor(interval)
    fraction = DEFAULT_EARLY_FRACTION if config.dga_early_fraction is None else config.dga_early_fraction
    early = early_phase(interval, num_sources, cost.cuttable_micro_batch_size, cost.train_iters, fraction,
                        cost.seq_length if config.dga_probe_prefixes is not False else None, cost.token_multiple)
    if early is None and cost.train_iters is not None and interval >= cost.train_iters:
        # Weights that never move are uniform sampling under another name: say so rather than run it.
        two_updates = UPDATE_INTERVAL_STEP * max(1, (cost.train_iters - 1) // 2 // UPDATE_INTERVAL_STEP)
        needed = probe_share(num_sources, probe, train, two_updates)
        raise ValueError(
            f"--mixing dga: {num_sources + 1} probes of {probe:g} micro batch{'' if probe == 1 else 'es'} per rank "
            f"against training's {train} per iteration allow one update every {interval} iterations at "
            f"--dga-probe-budget {budget:g}, which --train-iters {cost.train_iters} never reaches. Give "
            f"--dga-update-interval, a --dga-probe-budget of at least {needed:.2g} (two updates), larger batches, "
            "or fewer sources (--dga-base-distributions)")
    notes.append(schedule_note(num_sources, cost, budget, interval, early, fraction))
    return interval, factor, early


def schedule_note(num_sources: int, cost: ProbeCost, budget: float, interval: int,
                  early: Optional[EarlyPhase], fraction: float) -> str:
    """The start-up note of a derived schedule: when DGA updates, on what probes, at what cost."""
    train, probe = cost.train_microbatches, cost.probe_passes
    whole = f"{num_sources + 1} x {probe:g} micro batches per rank"
    tail = f"(--dga-probe-budget {budget:g}; --dga-update-interval sets it)"

    def steps_at(every: int) -> str:
        return f"with steps of {step_factor(every):g}x --dga-lr and --dga-step-clip"

    def cut_probes() -> str:
        size = cost.cuttable_micro_batch_size
        if early.sequence_tokens is not None:
            return (f"training's {size} sequences cut to their first {early.sequence_tokens} of {cost.seq_length} "
                    "tokens, one sequence's tokens")
        return f"{early.micro_batch_size} of training's {size} sequences"

    if early is not None and early.iters >= cost.train_iters:
        size = cost.cuttable_micro_batch_size
        specific = early.specific_micro_batch_size or early.micro_batch_size
        sources = early.micro_batch_size if early.sequence_tokens is None else \
            early.micro_batch_size * early.sequence_tokens / cost.seq_length  # in whole sequences
        passes = probe * (num_sources * sources + specific) / size  # per update, in micro batches
        late = whole_updates_after(interval, cost.train_iters, fraction)
        return (f"--mixing dga updates the weights every {early.interval} iterations on probes of "
                f"{cut_probes()} (the specific set's of "
                f"{f'all {size}' if specific == size else f'{specific} of {size}'}), to the end of "
                f"the run, {steps_at(early.interval)}: whole probes "
                f"({whole}) every {interval} iterations would leave {late} update{'' if late == 1 else 's'} after "
                f"the first {fraction:.3g} of the run (--dga-early-fraction), too few. The probes add "
                f"{passes / (early.interval * train):.0%} to training's {train} micro batches per "
                f"iteration {tail}")
    step = "" if interval == UPDATE_INTERVAL_STEP else f", {steps_at(interval)}"
    start = "" if early is None else (
        f"every {early.interval} iterations until iteration {early.iters} (--dga-early-fraction {fraction:.3g}), "
        f"on probes of {cut_probes()}, then ")
    return (f"--mixing dga updates the weights {start}every {interval} iterations{step}: the probes ({whole}) add "
            f"{probe_share(num_sources, probe, train, interval):.0%} to training's {train} per iteration {tail}")


def repetition_caps(max_epochs: float, domain_sequences, run_sequences: int) -> Optional[np.ndarray]:
    """The largest weight at which each domain is read at most `max_epochs` times over a run of
    `run_sequences`: max_epochs x its sequences / the run's, at most 1. Where the run is longer than
    that many epochs of all the data, the bound is the least repetition the data allow: the epochs of
    the natural mixture, which is then the only mixture left. None where nothing is bounded (or
    `max_epochs` is 0)."""
    if not max_epochs or not run_sequences:
        return None
    sequences = np.asarray(domain_sequences, dtype=np.float64)
    epochs = max(max_epochs, run_sequences / sequences.sum())
    caps = np.minimum(epochs * sequences / run_sequences, 1.0)
    return caps if np.any(caps < 1.0) else None


def described_caps(domain_names: List[str], caps: np.ndarray, shown: int = 8) -> str:
    """The bounded domains and their caps, tightest first; past `shown`, how many more."""
    bounded = sorted((c, n) for n, c in zip(domain_names, caps) if c < 1.0)
    text = ", ".join(f"{n} {c:.2g}" for c, n in bounded[:shown])
    return text if len(bounded) <= shown else f"{text} and {len(bounded) - shown} more"


def dga_hyperparameters(config: MixingConfig, update_interval: int, step_multiplier: float = 1.0,
                        early: Optional[EarlyPhase] = None) -> DGAHyperparameters:
    """`early`: an early phase, whose step is the one at its own interval."""
    early_fields = dict(early_iters=0, early_interval=UPDATE_INTERVAL_STEP, early_micro_batch_size=None,
                        early_step=1.0 / step_multiplier) if early is None else dict(
        early_iters=early.iters, early_interval=early.interval, early_micro_batch_size=early.micro_batch_size,
        early_specific_micro_batch_size=early.specific_micro_batch_size, early_sequence_tokens=early.sequence_tokens,
        early_step=step_factor(early.interval) / step_multiplier)
    return DGAHyperparameters(
        update_interval=update_interval, lr=config.dga_lr * step_multiplier, ema=config.dga_ema,
        ema_mode=config.dga_ema_mode, warmup_iters=config.dga_warmup_iters, min_weight=config.dga_min_weight,
        min_domain_weight=config.dga_min_domain_weight,
        alignment=config.dga_alignment, step_scale=config.dga_step_scale, scale_window=config.dga_scale_window,
        step_clip=config.dga_step_clip * step_multiplier, scale_by_lr=config.dga_scale_by_lr,
        score_ema=config.dga_score_ema, noise_shrink=config.dga_noise_shrink,
        **early_fields,
    )


def build_mixing(config: MixingConfig, domain_names: List[str], train_tokens: List[int],
                 data_path_weights: Optional[List[float]] = None,
                 importance_histogram: Optional[np.ndarray] = None, notes: Optional[List[str]] = None,
                 microbatches=None, domain_sequences: Optional[List[int]] = None,
                 run_sequences: Optional[int] = None) -> MixingAlgorithm:
    """`importance_histogram`: the specific set's histogram when computed at start-up; `notes`:
    where to say what became of --data-path weights the mixing does not take as they are, and
    which update interval DGA chose; `microbatches`: what DGA's derived schedule follows, a
    `probe_budget.ProbeCost` or (training micro batches per iteration, DGA's probe passes per source,
    in training micro batches) on each rank; `domain_sequences` (each domain's training sequences per
    epoch) and `run_sequences` (the run's): what --dga-max-epochs bounds the weights by."""
    natural = normalise(np.asarray(train_tokens, dtype=np.float64))
    notes = notes if notes is not None else []
    if data_path_weights is not None and config.mixing in ("uniform", "importance"):
        notes.append(f"--mixing {config.mixing} does not use the --data-path weights")
    if config.mixing == "uniform":
        return UniformMixing(domain_names)
    if config.mixing == "natural":
        if data_path_weights is not None and config.mixture_weights is None:
            # Megatron semantics: weights given with --data-path are the blend.
            return StaticMixing(domain_names, data_path_weights)
        return NaturalMixing(domain_names, train_tokens)
    if config.mixing == "static":
        if config.mixture_weights:
            return StaticMixing(domain_names, parse_weight_spec(config.mixture_weights, domain_names))
        if data_path_weights is not None:
            return StaticMixing(domain_names, data_path_weights)
        raise ValueError("--mixing static needs --mixture-weights or weights in --data-path")
    if config.mixing == "importance":
        histogram = importance_histogram
        if histogram is None:
            histogram = read_histogram(config.importance_histogram, domain_names)
        return ImportanceMixing(domain_names, histogram, natural, config.importance_smoothing)
    if config.mixing == "dga":
        bases = None
        if config.dga_base_distributions:
            bases = load_base_distributions(config.dga_base_distributions, len(domain_names))
        num_sources = len(domain_names) if bases is None else len(bases)
        if data_path_weights is not None:
            # Megatron's blend, where DGA starts from (over bases, each base's share of it).
            blend = normalise(np.asarray(data_path_weights, dtype=np.float64))
            initial = blend if bases is None else natural_source_weights(bases, blend)
            notes.append("--mixing dga starts from the --data-path weights (not --dga-initial-weights)")
        elif config.dga_initial_weights == "natural":
            # Natural weights over domains; over bases, each base's share of the tokens.
            initial = natural if bases is None else natural_source_weights(bases, natural)
        else:
            initial = np.ones(num_sources)
        interval, factor, early = dga_schedule(config, num_sources, microbatches, notes)
        caps = None
        if domain_sequences is not None:
            caps = repetition_caps(config.dga_max_epochs, domain_sequences, run_sequences)
        if caps is not None:
            notes.append(f"--dga-max-epochs {config.dga_max_epochs:g} bounds the weights of the domains that a "
                         f"run of {run_sequences} sequences would read more often: "
                         f"{described_caps(domain_names, caps)}")
        return DGAMixing(domain_names, initial, dga_hyperparameters(config, interval, factor, early), bases,
                         max_domain_weights=caps)
    raise ValueError(f"unknown --mixing {config.mixing!r}")
