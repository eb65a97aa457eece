"""The interface every mixing algorithm implements.

A mixing algorithm owns the domain weights (a point on the simplex). The trainer asks it for
the weights in effect, tells it each iteration, and, for online algorithms, gives it the
signal it asked for (for DGA: alignment scores from probe gradients). Its state goes into
checkpoints.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np


def normalise(weights) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if not np.all(np.isfinite(w)) or np.any(w < 0) or total <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero: {weights}")
    return w / total


class MixingAlgorithm:
    """Fixed weights; online algorithms override `wants_update` and `update`."""

    name = "static"

    def __init__(self, domain_names: List[str], weights):
        self.domain_names = list(domain_names)
        self._weights = normalise(weights)
        if len(self._weights) != len(self.domain_names):
            raise ValueError(f"{len(self._weights)} weights for {len(self.domain_names)} domains")

    @property
    def num_domains(self) -> int:
        return len(self.domain_names)

    def weights(self) -> np.ndarray:
        """The sampling weights in effect."""
        return self._weights.copy()

    def wants_update(self, iteration: int) -> bool:
        """Whether the trainer should measure this algorithm's signal before `iteration`."""
        return False

    def update(self, iteration: int, signal) -> bool:
        """Take a signal; return whether the sampling weights changed."""
        return False

    def log_values(self) -> Dict[str, Dict[str, float]]:
        """Series to log besides the weights, e.g. {"alignment": {domain: value}}."""
        return {}

    def state_dict(self) -> Dict:
        return {"name": self.name, "weights": self._weights.tolist()}

    def load_state_dict(self, state: Dict) -> None:
        if state.get("name") != self.name:
            raise ValueError(f"checkpoint was trained with --mixing {state.get('name')}, not {self.name}")
        self._weights = normalise(state["weights"])


def parse_weight_spec(spec: Optional[str], domain_names: List[str], flag: str = "--mixture-weights") -> np.ndarray:
    """'name=w,name=w' -> weights in domain order; unnamed domains get 0."""
    if not spec:
        raise ValueError(f"{flag} is required (e.g. {domain_names[0]}=0.5,...)")
    weights = np.zeros(len(domain_names))
    for item in spec.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            raise ValueError(f"{flag}: expected name=weight, got {item!r}")
        if name not in domain_names:
            raise ValueError(f"{flag}: unknown domain {name!r}; domains are {', '.join(domain_names)}")
        try:
            weights[domain_names.index(name)] = float(value)
        except ValueError:
            raise ValueError(f"{flag}: {value!r} is not a number (in {item!r})") from None
    try:
        return normalise(weights)
    except ValueError as e:
        raise ValueError(f"{flag}: {e}") from None
