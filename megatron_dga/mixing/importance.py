"""Importance sampling: sample domains as often as the specific set falls into them.

The weights are the specific set's histogram over the domains, read from the output of
`tools/cluster_domains.py --assign` (clusters are matched to domains by name), or computed
at start-up by assigning the specific set's documents to the centroids of a clustering run.
`--importance-smoothing lambda` mixes in the natural distribution: w = (1 - lambda) h + lambda n,
which keeps every domain with tokens sampled.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Dict, List, Sequence

import numpy as np

from megatron_dga.files import read_json
from megatron_dga.mixing.base import MixingAlgorithm, normalise


def histogram_weights(histogram: Dict, domain_names: List[str], source: str) -> np.ndarray:
    """Weights in domain order from an assignment histogram {"clusters": [...], "counts": [...]}."""
    try:
        clusters, counts = histogram["clusters"], histogram["counts"]
    except KeyError as e:
        raise ValueError(f"{source}: not an assignment histogram (missing {e})") from None
    if len(clusters) != len(counts):
        raise ValueError(f"{source}: {len(clusters)} clusters but {len(counts)} counts")
    unknown = sorted(set(clusters) - set(domain_names))
    missing = sorted(set(domain_names) - set(clusters))
    if unknown or missing:
        raise ValueError(
            f"{source}: clusters and domains differ (clusters without a domain: {unknown or 'none'}; "
            f"domains without a cluster: {missing or 'none'})"
        )
    by_name = dict(zip(clusters, counts))
    weights = np.array([float(by_name[name]) for name in domain_names])
    if weights.sum() <= 0:
        raise ValueError(f"{source}: the histogram is empty")
    return weights / weights.sum()


def read_histogram(path: str, domain_names: List[str]) -> np.ndarray:
    return histogram_weights(read_json(path, "--importance-histogram"), domain_names, path)


class ImportanceMixing(MixingAlgorithm):
    name = "importance"

    def __init__(self, domain_names: List[str], histogram: np.ndarray, natural: np.ndarray, smoothing: float = 0.0):
        if not 0.0 <= smoothing <= 1.0:
            raise ValueError(f"--importance-smoothing {smoothing} must be in [0, 1]")
        self.histogram = normalise(histogram)
        super().__init__(domain_names, (1.0 - smoothing) * self.histogram + smoothing * normalise(natural))


def assign_to_clusters(clusters_dir: str, texts: Sequence[str], domain_names: List[str]) -> np.ndarray:
    """The histogram of `texts` over the clusters of a `tools/cluster_domains.py` run, with the
    embedder that run recorded (what `--assign` does), as weights in domain order."""
    from megatron_dga.clustering.pipeline import AssignConfig, assign_documents

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "specific.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for text in texts:
                f.write(json.dumps({"text": text}) + "\n")
        histogram = assign_documents(AssignConfig(inputs=[path], clusters_dir=clusters_dir, output_dir=tmp,
                                                  name="specific", progress=False, skip_bad=True))
    return histogram_weights(histogram, domain_names, f"--importance-clusters {clusters_dir}")
