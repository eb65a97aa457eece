"""Dynamic Gradient Alignment (DGA): mixture weights that follow the specific set's gradient.

Every T_r iterations the trainer measures, for each source i (a domain, or a base
distribution over domains), an alignment score a_i between the gradient of source i and the
gradient of the specific set (`--dga-alignment`; `alignment.py`), and hands it to `update`,
which takes one exponentiated-gradient (mirror-descent) step on the simplex from the weights
being sampled, w:

    alpha_hat = lift(softmax(log w + x)),        x: the controlled step (below),

and smooths it with an exponential moving average of weight beta (`--dga-ema`):

    mode "state"    (default): q <- beta * q + (1 - beta) * alpha_hat; q is sampled from and is
                    where the next step starts;
    mode "sampling":           the mirror state r <- alpha_hat follows the steps unsmoothed and
                    only what is sampled is smoothed, q <- beta * q + (1 - beta) * alpha_hat.

`lift` bounds the weights from above, then from below. Above: with `max_domain_weights` c
(`--dga-max-epochs`: no domain read more than E times over the run), the weights above their
caps are cut to them and the others take up that mass in proportion (`cap_to_ceiling`, the
projection onto {w <= c} in KL, as the floor's below). Below: the floor `--dga-min-weight` m:
the sources below m are lifted to it and the others give up that mass in proportion
(`lift_to_floor`). Each leaves the weights within its bound unchanged, so a step of zero
changes nothing, and a source that always scores worst settles at m exactly; an average of
floored (capped) weights is floored (capped), so nothing is bounded twice.

**Step control** (docs/dga.md has the derivation): the score is centred on its median across
sources (the softmax ignores a common shift) and divided by the running scale of the scores,
the median of the robust spreads of the last `--dga-scale-window` updates (`--dga-step-scale
spread`: eta is then a step in log-weight units whatever the gradient scale); it is then
multiplied by eta and by the learning-rate ratio gamma_t / gamma_max (`--dga-scale-by-lr`),
clipped to [-C, C] (`--dga-step-clip`) and averaged over updates (`--dga-score-ema`).

**Safety**: the iterates are kept as log-weights, clamped below at the log of the smallest
normal double, so a source pushed to zero can come back. An alignment or step that is not
finite skips the update with a warning; the weights stay where they were, finite and on the
simplex. With base distributions P (N x k, one row per base) the weights live on the
N-simplex and domains are sampled from p = w^T P, lifted per domain to
`--dga-min-domain-weight`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from megatron_dga.mixing.base import MixingAlgorithm, normalise

log = logging.getLogger(__name__)

# log-weights never go below this: exp() of it is the smallest normal double, so a source's
# weight can vanish in float64 and still be brought back by later steps.
MIN_LOG_WEIGHT = float(np.log(np.finfo(np.float64).tiny))

ALIGNMENTS = ("raw", "adam", "cosine")
MAD_TO_SD = 1.4826  # the median absolute deviation of Gaussian samples times this is their standard deviation
STEP_SCALES = ("none", "spread")


# The paper's update, alpha <- softmax(log alpha + eta <g_spe, g_i>), without step control: the
# defaults below add Adam's preconditioner and the step control (docs/dga.md says why).
PAPER_UPDATE = dict(lr=1.0, alignment="raw", step_scale="none", step_clip=0.0, scale_by_lr=False, score_ema=0.0)


@dataclass
class DGAHyperparameters:
    update_interval: int = 10
    lr: float = 0.5
    ema: float = 0.5
    ema_mode: str = "state"
    warmup_iters: int = 0
    min_weight: float = 0.0
    min_domain_weight: float = 0.0
    alignment: str = "adam"
    step_scale: str = "spread"
    scale_window: int = 9
    step_clip: float = 1.0
    scale_by_lr: bool = True
    score_ema: float = 0.5
    noise_shrink: bool = False
    # The early phase (--dga-early-fraction): before iteration early_iters, updates every early_interval
    # iterations, probes of early_micro_batch_size sequences per rank (the specific set's of
    # early_specific_micro_batch_size, where given; the sources' cut to their first
    # early_sequence_tokens, where given), lr and step_clip times early_step.
    early_iters: int = 0
    early_interval: int = 10
    early_micro_batch_size: Optional[int] = None
    early_specific_micro_batch_size: Optional[int] = None
    early_sequence_tokens: Optional[int] = None
    early_step: float = 1.0

    def check(self, num_sources: int, num_domains: int) -> None:
        if self.update_interval < 1:
            raise ValueError("--dga-update-interval must be >= 1")
        if self.early_iters < 0 or self.early_interval < 1:
            raise ValueError("DGA's early phase needs early_iters >= 0 and early_interval >= 1")
        if not np.isfinite(self.lr) or self.lr < 0:
            raise ValueError("--dga-lr must be a finite non-negative number")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError("--dga-ema must be in [0, 1)")
        if self.ema_mode not in ("state", "sampling"):
            raise ValueError("--dga-ema-mode must be 'state' or 'sampling'")
        if not 0.0 <= self.min_weight or self.min_weight * num_sources >= 1.0:
            raise ValueError(
                f"--dga-min-weight {self.min_weight} must be >= 0 and below 1/{num_sources} (number of sources)"
            )
        if not 0.0 <= self.min_domain_weight or self.min_domain_weight * num_domains >= 1.0:
            raise ValueError(
                f"--dga-min-domain-weight {self.min_domain_weight} must be >= 0 and below 1/{num_domains} "
                "(number of domains)"
            )
        if self.alignment not in ALIGNMENTS:
            raise ValueError(f"--dga-alignment must be one of {', '.join(ALIGNMENTS)}")
        if self.step_scale not in STEP_SCALES:
            raise ValueError(f"--dga-step-scale must be one of {', '.join(STEP_SCALES)}")
        if self.scale_window < 1:
            raise ValueError("--dga-scale-window must be >= 1")
        if not (np.isfinite(self.step_clip) and self.step_clip >= 0):
            raise ValueError("--dga-step-clip must be a finite number >= 0 (0: no clip)")
        if not 0.0 <= self.score_ema < 1.0:
            raise ValueError("--dga-score-ema must be in [0, 1)")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - np.max(logits)
    return shifted - np.log(np.sum(np.exp(shifted)))


def robust_spread(centred: np.ndarray) -> float:
    """1.4826 x the median absolute deviation (the standard deviation of Gaussian scores); the
    mean absolute deviation where more than half the sources tie."""
    spread = MAD_TO_SD * float(np.median(np.abs(centred)))
    return spread if spread > 0 else float(np.mean(np.abs(centred)))


def shrink_by_noise(centred: np.ndarray, spread: float, stderr: Optional[np.ndarray]) -> np.ndarray:
    """Each centred score times tau^2 / (tau^2 + se_i^2): its expected true value when true
    scores spread as N(0, tau^2) and the probes add noise of standard error se_i
    (`--dga-noise-shrink`). tau^2 is the observed (robust) spread^2 less the mean noise variance, so
    an update whose differences are within the noise moves nothing, and a noisy source moves
    less than a well-measured one. Unknown standard errors (one probe micro batch) leave the
    scores as they are."""
    if stderr is None or not np.all(np.isfinite(stderr)):
        return centred
    noise = np.asarray(stderr, dtype=np.float64) ** 2
    signal = max(spread ** 2 - float(np.mean(noise)), 0.0)
    if signal == 0.0:
        return np.zeros_like(centred)
    return centred * (signal / (signal + noise))


def cap_to_ceiling(p: np.ndarray, caps: np.ndarray) -> np.ndarray:
    """min(caps, s p), with the s >= 1 that keeps the sum at 1: the entries above their caps are cut
    to them, and the others take up the mass in proportion to their weights (the mirror of
    `lift_to_floor`). Raising them can push another above its cap, so it repeats until none is.
    `p` itself comes back where no entry is above its cap. Needs sum(caps) >= 1."""
    if np.all(p <= caps):
        return p
    capped = np.zeros(len(p), dtype=bool)
    while True:
        free = ~capped
        room = 1.0 - caps[capped].sum()
        mass = p[free].sum()
        if not free.any():  # the caps sum to 1 (within rounding): they are the only mixture left
            return caps / caps.sum()
        if mass <= 0:  # no weight left to scale: fill the free entries' room in proportion to their caps
            filled = caps.copy()
            filled[free] = room * caps[free] / caps[free].sum()
            return filled
        scaled = np.zeros_like(p)  # only the free entries: a capped one over a tiny mass would overflow
        scaled[free] = room * (p[free] / mass)  # p / mass first (at most 1): a tiny mass would lose p*room
        newly = free & (scaled > caps)
        if not newly.any():
            return np.where(capped, caps, scaled)
        capped |= newly


def lift_to_floor(p: np.ndarray, floor: float) -> np.ndarray:
    """max(floor, s p), with the s <= 1 that keeps the sum at 1: the entries below the floor
    are lifted to it, and the others give up the mass in proportion to their weights, so no
    more mass moves than the lift needs, and weights already at or above the floor are left
    as they are. Lifting can push another entry below the floor, so it repeats until none is;
    with floor x k < 1 it ends with at least one entry free."""
    if floor <= 0:
        return p
    lifted = np.zeros(len(p), dtype=bool)
    while True:
        free = ~lifted
        scaled = p * (1.0 - floor * lifted.sum()) / p[free].sum()
        newly = free & (scaled < floor)
        if not newly.any():
            return np.where(lifted, floor, scaled)
        lifted |= newly


class DGAMixing(MixingAlgorithm):
    name = "dga"

    def __init__(self, domain_names: List[str], initial_weights, hyper: DGAHyperparameters,
                 base_distributions: Optional[np.ndarray] = None, source_names: Optional[List[str]] = None,
                 max_domain_weights: Optional[np.ndarray] = None):
        """`max_domain_weights`: the most each domain may be sampled at (`--dga-max-epochs`), or None."""
        self.hyper = hyper
        k = len(domain_names)
        self.domain_caps = None if max_domain_weights is None else np.asarray(max_domain_weights, dtype=np.float64)
        if self.domain_caps is not None and (self.domain_caps.shape != (k,) or self.domain_caps.sum() < 1 - 1e-9):
            raise ValueError(f"the {k} domains' largest weights must sum to at least 1: {self.domain_caps}")
        # Over domains the iterate is capped too; over bases only what is sampled (a base's cap is not a domain's).
        self.source_caps = self.domain_caps if base_distributions is None else None
        self.bases = np.eye(k) if base_distributions is None else np.asarray(base_distributions, dtype=np.float64)
        if self.bases.ndim != 2 or self.bases.shape[1] != k:
            raise ValueError(f"base distributions must be an N x {k} matrix, got shape {self.bases.shape}")
        self.bases = np.stack([normalise(row) for row in self.bases])
        self.source_names = source_names or (
            list(domain_names) if base_distributions is None else [f"base_{j}" for j in range(len(self.bases))]
        )
        hyper.check(len(self.bases), k)
        start = normalise(initial_weights)
        if len(start) != len(self.bases):
            raise ValueError(f"{len(start)} initial weights for {len(self.bases)} sources")
        start_log = self._lifted(start_log_of(start))
        self.log_state = start_log.copy()  # r: the mirror-descent iterate ("sampling" mode)
        self.log_smoothed = start_log.copy()  # q: the smoothed iterate, sampled from
        self.last_alignment = np.full(len(self.bases), np.nan)
        self.last_stderr = np.full(len(self.bases), np.nan)
        self.last_step = np.zeros(len(self.bases))
        self.score_average = np.zeros(len(self.bases))  # EMA of the clipped steps (bias-corrected on use)
        self.log_spreads: List[float] = []  # log of the robust spread of the last --dga-scale-window updates
        self.score_updates = 0  # updates that entered the score average
        self.updates = 0
        self.skipped = 0
        self.schedule_change: Optional[str] = None  # set by a resume whose checkpoint updated otherwise
        super().__init__(domain_names, self.domain_weights_of(self.sampling))

    # ---- weights -------------------------------------------------------------------------
    @property
    def num_sources(self) -> int:
        return len(self.bases)

    def _lifted(self, log_w: np.ndarray) -> np.ndarray:
        """log lift(softmax(log_w)): the caps of --dga-max-epochs, then the floor --dga-min-weight,
        in log space (where neither applies, a weight too small for a double keeps a finite log)."""
        log_p = log_softmax(log_w)
        m = self.hyper.min_weight
        p = np.exp(log_p)
        binds = self.source_caps is not None and np.any(p > self.source_caps)
        if m <= 0 and not binds:
            return log_p
        if binds:
            p = cap_to_ceiling(p, self.source_caps)
        with np.errstate(divide="ignore"):
            return np.log(lift_to_floor(p, m))

    @property
    def sampling(self) -> np.ndarray:
        """The source weights domains are sampled from."""
        return normalise(np.exp(self.log_smoothed))

    def domain_weights_of(self, source_weights: np.ndarray) -> np.ndarray:
        """p = w^T P, cut to the domains' caps (`cap_to_ceiling`) and lifted to the domain floor m_d
        (`lift_to_floor`). The domain floor matters with base distributions, where the source floor
        reaches a domain only through its share in its bases."""
        mixed = normalise(source_weights @ self.bases)
        if self.domain_caps is not None:
            mixed = cap_to_ceiling(mixed, self.domain_caps)
        return lift_to_floor(mixed, self.hyper.min_domain_weight)

    # ---- updates -------------------------------------------------------------------------
    def in_early_phase(self, iteration: int) -> bool:
        """Whether the update after `iteration` iterations belongs to the early phase."""
        return iteration < self.hyper.early_iters

    def wants_update(self, iteration: int) -> bool:
        h = self.hyper
        interval = h.early_interval if self.in_early_phase(iteration) else h.update_interval
        return iteration > 0 and iteration >= h.warmup_iters and iteration % interval == 0

    def probe_micro_batch_size(self, iteration: int) -> Optional[int]:
        """Sequences per rank of this update's probe micro batches when cut below training's, else None."""
        return self.hyper.early_micro_batch_size if self.in_early_phase(iteration) else None

    def specific_probe_micro_batch_size(self, iteration: int) -> Optional[int]:
        """Sequences per rank of this update's specific probe micro batches in the early phase (the
        sources' unless it sets the specific set's apart), else None."""
        if not self.in_early_phase(iteration):
            return None
        h = self.hyper
        return h.early_micro_batch_size if h.early_specific_micro_batch_size is None \
            else h.early_specific_micro_batch_size

    def probe_sequence_tokens(self, iteration: int) -> Optional[int]:
        """Tokens of each source probe sequence's prefix in this update, where cut to one, else None."""
        return self.hyper.early_sequence_tokens if self.in_early_phase(iteration) else None

    def running_scale(self) -> Optional[float]:
        """The median spread of the last --dga-scale-window updates (None before the first)."""
        return float(np.exp(np.median(self.log_spreads))) if self.log_spreads else None

    def controlled_step(self, alignment: np.ndarray, lr_scale: float, in_running_scale: bool = True,
                        stderr: Optional[np.ndarray] = None, step_multiplier: float = 1.0) -> np.ndarray:
        """The step in log-weights, eta * x: centred, scaled, clipped, then averaged over
        updates. Updates the running statistics; called only with a finite alignment.

        Every statistic is robust to outliers: the centre is the median across sources (any
        centre gives the same unclipped step), the spread their median absolute deviation,
        the scale the median of the last W spreads, kept as logarithms (it ignores up to
        (W - 1) / 2 outlying updates whatever their size, follows a lasting change of scale
        in (W + 1) / 2 updates, either way, and cannot overflow), and the average is taken
        over clipped steps, so an outlying source moves one update by at most C.
        A measurement in other units (`in_running_scale=False`: the raw score measured before
        Adam has state) is scaled by its own spread and does not enter the running scale."""
        h = self.hyper
        centred = alignment - np.median(alignment)
        spread = robust_spread(centred)
        score = shrink_by_noise(centred, spread, stderr) if h.noise_shrink else centred
        if h.step_scale == "spread":
            usable = np.isfinite(spread) and spread > 0
            if usable and in_running_scale:
                self.log_spreads = (self.log_spreads + [float(np.log(spread))])[-h.scale_window:]
            scale = self.running_scale() if in_running_scale else (spread if usable else None)
            score = score / scale if scale else np.zeros_like(centred)
        step = h.lr * step_multiplier * (lr_scale if h.scale_by_lr else 1.0) * score
        if h.step_clip > 0:
            clip = h.step_clip * step_multiplier
            step = np.clip(step, -clip, clip)
        if h.score_ema > 0:
            self.score_updates += 1
            self.score_average = h.score_ema * self.score_average + (1.0 - h.score_ema) * step
            step = self.score_average / (1.0 - h.score_ema ** self.score_updates)
        return step

    def _smooth(self, log_q: np.ndarray, log_new: np.ndarray) -> np.ndarray:
        beta = self.hyper.ema
        if beta == 0:
            return log_new
        return log_softmax(np.logaddexp(np.log(beta) + log_q, np.log1p(-beta) + log_new))

    def update(self, iteration: int, alignment, stderr=None, lr_scale: float = 1.0,
               in_running_scale: bool = True) -> bool:
        a = np.asarray(alignment, dtype=np.float64)
        self.last_alignment = a.copy()
        self.last_stderr = np.full(self.num_sources, np.nan) if stderr is None else np.asarray(stderr, np.float64)
        if a.shape != (self.num_sources,) or not np.all(np.isfinite(a)):
            return self._skip(iteration, f"alignment is not finite: {a}")
        # An overflowing step is skipped, but its spread stays in the running scale: it was
        # measured, and without it a scale set by tiny scores could never follow them back up.
        saved = (self.score_average.copy(), self.score_updates)
        with np.errstate(over="ignore", invalid="ignore"):
            multiplier = self.hyper.early_step if self.in_early_phase(iteration) else 1.0
            step = self.controlled_step(a, lr_scale, in_running_scale, self.last_stderr, multiplier)
        if not np.all(np.isfinite(step)):
            self.score_average, self.score_updates = saved
            return self._skip(iteration, f"the step overflows (eta x alignment): {step}")
        self.last_step = step
        if self.hyper.ema_mode == "state":
            new = self._lifted(self.log_smoothed + step)
            self.log_smoothed = self._smooth(self.log_smoothed, new)
            self.log_state = self.log_smoothed.copy()
        else:
            self.log_state = self._lifted(self.log_state + step)
            self.log_smoothed = self._smooth(self.log_smoothed, self.log_state)
        self.log_state = np.maximum(self.log_state, MIN_LOG_WEIGHT)
        self.log_smoothed = np.maximum(self.log_smoothed, MIN_LOG_WEIGHT)
        self._weights = self.domain_weights_of(self.sampling)
        self.updates += 1
        return True

    def _skip(self, iteration: int, why: str) -> bool:
        self.skipped += 1
        log.warning("DGA update at iteration %d skipped: %s", iteration, why)
        return False

    def log_values(self) -> Dict[str, Dict[str, float]]:
        names = self.source_names
        values = {"alignment": {n: float(v) for n, v in zip(names, self.last_alignment)}}
        if np.any(np.isfinite(self.last_stderr)):
            values["alignment-stderr"] = {n: float(v) for n, v in zip(names, self.last_stderr)}
            centred = self.last_alignment - np.mean(self.last_alignment)
            noise = float(np.sqrt(np.nanmean(self.last_stderr ** 2)))
            values["dga-noise"] = {
                "score-rms": float(np.sqrt(np.mean(centred ** 2))),
                "stderr-rms": noise,
            }
        values["dga-step"] = {n: float(v) for n, v in zip(names, self.last_step)}
        if self.num_sources != self.num_domains or self.source_names != self.domain_names:
            values["dga-source-weights"] = {n: float(v) for n, v in zip(names, self.sampling)}
        values["dga-updates"] = {"done": float(self.updates), "skipped": float(self.skipped)}
        return values

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> Dict:
        return {
            **super().state_dict(),
            "log_state": self.log_state.tolist(),
            "log_smoothed": self.log_smoothed.tolist(),
            "score_average": self.score_average.tolist(),
            "score_updates": self.score_updates,
            "log_spreads": list(self.log_spreads),
            "last_alignment": self.last_alignment.tolist(),
            "last_stderr": self.last_stderr.tolist(),
            "last_step": self.last_step.tolist(),
            "updates": self.updates,
            "skipped": self.skipped,
            "bases": self.bases.tolist(),
            "schedule": self._schedule(),
        }

    def _schedule(self) -> Dict:
        h = self.hyper
        schedule = {"update_interval": h.update_interval, "lr": h.lr, "step_clip": h.step_clip}
        if h.early_iters:
            schedule["early"] = {"iters": h.early_iters, "interval": h.early_interval,
                                 "micro_batch_size": h.early_micro_batch_size, "step": h.early_step}
            if h.early_specific_micro_batch_size is not None:
                schedule["early"]["specific_micro_batch_size"] = h.early_specific_micro_batch_size
            if h.early_sequence_tokens is not None:
                schedule["early"]["sequence_tokens"] = h.early_sequence_tokens
        return schedule

    def load_state_dict(self, state: Dict) -> None:
        super().load_state_dict(state)
        if np.asarray(state["bases"]).shape != self.bases.shape:
            raise ValueError("checkpoint DGA base distributions differ from this run's")
        if "log_spreads" not in state:
            raise ValueError("this checkpoint's DGA state is from an older version; it cannot be resumed exactly")
        self.log_state = np.asarray(state["log_state"], dtype=np.float64)
        self.log_smoothed = np.asarray(state["log_smoothed"], dtype=np.float64)
        self.score_average = np.asarray(state["score_average"], dtype=np.float64)
        self.score_updates = int(state["score_updates"])
        self.log_spreads = [float(x) for x in state["log_spreads"]]
        self.last_alignment = np.asarray(state["last_alignment"], dtype=np.float64)
        self.last_stderr = np.asarray(state["last_stderr"], dtype=np.float64)
        self.last_step = np.asarray(state["last_step"], dtype=np.float64)
        self.updates = int(state["updates"])
        self.skipped = int(state["skipped"])
        saved = state.get("schedule")
        if saved is not None and saved != self._schedule():
            # A derived interval and step follow the micro batches per rank, which a new layout changes.
            def described(schedule):
                early = schedule.get("early")
                specific = "" if "specific_micro_batch_size" not in (early or {}) else \
                    f" (the specific set's of {early['specific_micro_batch_size']})"
                prefixes = "" if "sequence_tokens" not in (early or {}) else \
                    f" cut to their first {early['sequence_tokens']} tokens"
                start = "" if not early else (f"every {early['interval']} iterations until iteration {early['iters']} "
                                              f"on probes of {early['micro_batch_size']} sequences per rank{prefixes}"
                                              f"{specific}, then ")
                return (f"{start}every {schedule['update_interval']} iterations, step {schedule['lr']:.3g} and clip "
                        f"{schedule['step_clip']:.3g}")
            self.schedule_change = (f"the checkpoint's DGA updated {described(saved)}; this run updates "
                                    f"{described(self._schedule())} (--dga-update-interval, --dga-lr, --dga-step-clip "
                                    "and --dga-early-fraction keep a schedule)")


def start_log_of(weights: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.maximum(np.log(weights), MIN_LOG_WEIGHT)


def natural_source_weights(bases: np.ndarray, domain_tokens: np.ndarray) -> np.ndarray:
    """Each source's share of the training tokens: every domain's tokens are split between the
    bases that hold it, in proportion to their weight on it. When the bases partition the
    domains, w^T P is then the natural distribution itself."""
    share = np.asarray(bases, dtype=np.float64)
    held = share.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        split = np.where(held > 0, share / held, 0.0)
    return normalise(split @ np.asarray(domain_tokens, dtype=np.float64))
