"""Build the mixing algorithm named by --mixing."""

from __future__ import annotations

from typing import List, Optional

from megatron_dga.config import MixingConfig
from megatron_dga.mixing.base import MixingAlgorithm, parse_weight_spec
from megatron_dga.mixing.static import NaturalMixing, StaticMixing, UniformMixing


def build_mixing(config: MixingConfig, domain_names: List[str], train_tokens: List[int],
                 data_path_weights: Optional[List[float]] = None) -> MixingAlgorithm:
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
    raise ValueError(f"unknown --mixing {config.mixing!r}")
