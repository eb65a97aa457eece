"""Dynamic Gradient Alignment (DGA): mixture weights that follow the specific set's gradient.

Every T_r iterations the trainer measures, for each source i (a domain, or a base
distribution over domains), the alignment a_i = <grad L_i(theta), grad L_spe(theta)> and
hands it to `update`, which takes one exponentiated-gradient (mirror-descent) step on the
simplex,

    alpha_hat = softmax(log alpha + eta * a),

then smooths it with an exponential moving average of weight beta (`--dga-ema`):

    mode "state"    (default): alpha <- beta * alpha + (1 - beta) * alpha_hat, and the
                    smoothed alpha is both sampled from and the point of the next step;
    mode "sampling":           the mirror state follows alpha_hat unsmoothed; only the
                    sampling weights are smoothed, w <- beta * w + (1 - beta) * alpha_hat.

beta = 0 turns the EMA off (both modes then coincide). A floor `--dga-min-weight` m keeps
every source sampled: w <- m + (1 - N m) w. With base distributions P (N x k, one row per
base) the weights live on the N-simplex and domains are sampled from p = w^T P.

An alignment that is not finite (NaN or inf, e.g. after an fp16 overflow) skips the update
with a warning; the weights stay where they were, always finite and on the simplex.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from megatron_dga.mixing.base import MixingAlgorithm, normalise

log = logging.getLogger(__name__)


@dataclass
class DGAHyperparameters:
    update_interval: int = 10
    lr: float = 1.0
    ema: float = 0.5
    ema_mode: str = "state"
    warmup_iters: int = 0
    min_weight: float = 0.0

    def check(self, num_sources: int) -> None:
        if self.update_interval < 1:
            raise ValueError("--dga-update-interval must be >= 1")
        if not np.isfinite(self.lr) or self.lr < 0:
            raise ValueError("--dga-lr must be a finite non-negative number")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError("--dga-ema must be in [0, 1)")
        if self.ema_mode not in ("state", "sampling"):
            raise ValueError("--dga-ema-mode must be 'state' or 'sampling'")
        if self.min_weight < 0 or self.min_weight * num_sources >= 1.0:
            raise ValueError(
                f"--dga-min-weight {self.min_weight} must be >= 0 and below 1/{num_sources} (number of sources)"
            )


def exponentiated_gradient_step(weights: np.ndarray, alignment: np.ndarray, lr: float) -> np.ndarray:
    """softmax(log w + lr * a), computed stably; zero weights stay zero."""
    with np.errstate(divide="ignore"):
        logits = np.log(weights) + lr * alignment
    logits -= np.max(logits)
    new = np.exp(logits)
    return new / new.sum()


def apply_floor(weights: np.ndarray, floor: float) -> np.ndarray:
    return floor + (1.0 - floor * len(weights)) * weights if floor > 0 else weights


class DGAMixing(MixingAlgorithm):
    name = "dga"

    def __init__(self, domain_names: List[str], initial_weights, hyper: DGAHyperparameters,
                 base_distributions: Optional[np.ndarray] = None, source_names: Optional[List[str]] = None):
        self.hyper = hyper
        k = len(domain_names)
        self.bases = np.eye(k) if base_distributions is None else np.asarray(base_distributions, dtype=np.float64)
        if self.bases.ndim != 2 or self.bases.shape[1] != k:
            raise ValueError(f"base distributions must be an N x {k} matrix, got shape {self.bases.shape}")
        self.bases = np.stack([normalise(row) for row in self.bases])
        self.source_names = source_names or (
            list(domain_names) if base_distributions is None else [f"base_{j}" for j in range(len(self.bases))]
        )
        hyper.check(len(self.bases))
        start = normalise(initial_weights)
        if len(start) != len(self.bases):
            raise ValueError(f"{len(start)} initial weights for {len(self.bases)} sources")
        self.state = apply_floor(start, hyper.min_weight)  # the point of the mirror-descent steps
        self.sampling = self.state.copy()  # the source weights domains are sampled from
        self.last_alignment = np.full(len(self.bases), np.nan)
        self.updates = 0
        self.skipped = 0
        super().__init__(domain_names, self.domain_weights_of(self.sampling))

    # ---- weights -------------------------------------------------------------------------
    @property
    def num_sources(self) -> int:
        return len(self.bases)

    def domain_weights_of(self, source_weights: np.ndarray) -> np.ndarray:
        return normalise(source_weights @ self.bases)

    # ---- updates -------------------------------------------------------------------------
    def wants_update(self, iteration: int) -> bool:
        h = self.hyper
        return iteration > 0 and iteration >= h.warmup_iters and iteration % h.update_interval == 0

    def update(self, iteration: int, alignment) -> bool:
        a = np.asarray(alignment, dtype=np.float64)
        self.last_alignment = a.copy()
        if a.shape != (self.num_sources,) or not np.all(np.isfinite(a)):
            self.skipped += 1
            log.warning("DGA update at iteration %d skipped: alignment is not finite: %s", iteration, a)
            return False
        h = self.hyper
        step = exponentiated_gradient_step(self.state, a, h.lr)
        if h.ema_mode == "state":
            self.state = h.ema * self.state + (1.0 - h.ema) * step
            self.sampling = self.state
        else:
            self.state = step
            self.sampling = h.ema * self.sampling + (1.0 - h.ema) * step
        self.state = apply_floor(normalise(self.state), h.min_weight)
        self.sampling = apply_floor(normalise(self.sampling), h.min_weight)
        self._weights = self.domain_weights_of(self.sampling)
        self.updates += 1
        return True

    def log_values(self) -> Dict[str, Dict[str, float]]:
        values = {"alignment": {n: float(v) for n, v in zip(self.source_names, self.last_alignment)}}
        if self.num_sources != self.num_domains or self.source_names != self.domain_names:
            values["dga-source-weights"] = {n: float(v) for n, v in zip(self.source_names, self.sampling)}
        values["dga-updates"] = {"done": float(self.updates), "skipped": float(self.skipped)}
        return values

    # ---- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> Dict:
        return {
            **super().state_dict(),
            "state": self.state.tolist(),
            "sampling": self.sampling.tolist(),
            "last_alignment": self.last_alignment.tolist(),
            "updates": self.updates,
            "skipped": self.skipped,
            "bases": self.bases.tolist(),
        }

    def load_state_dict(self, state: Dict) -> None:
        super().load_state_dict(state)
        if np.asarray(state["bases"]).shape != self.bases.shape:
            raise ValueError("checkpoint DGA base distributions differ from this run's")
        self.state = np.asarray(state["state"], dtype=np.float64)
        self.sampling = np.asarray(state["sampling"], dtype=np.float64)
        self.last_alignment = np.asarray(state["last_alignment"], dtype=np.float64)
        self.updates = int(state["updates"])
        self.skipped = int(state["skipped"])
