"""Fixed mixtures: uniform, natural (proportional to each domain's training tokens), and
static (weights given on the command line or by --data-path)."""

from __future__ import annotations

from typing import List

import numpy as np

from megatron_dga.mixing.base import MixingAlgorithm


class UniformMixing(MixingAlgorithm):
    name = "uniform"

    def __init__(self, domain_names: List[str]):
        super().__init__(domain_names, np.ones(len(domain_names)))


class NaturalMixing(MixingAlgorithm):
    name = "natural"

    def __init__(self, domain_names: List[str], train_tokens: List[int]):
        super().__init__(domain_names, np.asarray(train_tokens, dtype=np.float64))


class StaticMixing(MixingAlgorithm):
    name = "static"
