"""Base distributions for DGA's distribution reweighting, from a clustering's centroids.

With k in the hundreds or thousands, DGA learns weights over N << k base distributions
instead of over the k domains, so an update costs N + 1 probes. A natural choice of bases
follows the geometry of the domains: cluster the k centroids themselves into N groups
(seeded spherical k-means, as for the documents) and let base j be the domains of group j,
each weighted by its share of training tokens. Every domain is in exactly one base, so every
domain can be sampled whatever the weights over the bases.
"""

from __future__ import annotations

from typing import Dict, List

import numpy as np

from megatron_dga.clustering.kmeans import fit_kmeans


def group_bases(centroids: np.ndarray, tokens: np.ndarray, num_bases: int, seed: int = 1234) -> Dict:
    """N x k matrix of bases (rows on the simplex) and the group of every domain."""
    k = len(centroids)
    if len(tokens) != k:
        raise ValueError(f"{len(tokens)} token counts for {k} centroids")
    if not 1 <= num_bases <= k:
        raise ValueError(f"--num-bases must be between 1 and the number of domains ({k}), got {num_bases}")
    groups = fit_kmeans(centroids, num_bases, seed=seed).labels
    bases = np.zeros((num_bases, k))
    for j in range(num_bases):
        members = groups == j
        bases[j, members] = np.maximum(tokens[members], 1)  # an empty domain still gets a little
        bases[j] /= bases[j].sum()
    return {"bases": bases.tolist(), "groups": groups.tolist()}


def describe(bases: np.ndarray, names: List[str], top: int = 3) -> List[str]:
    """One line per base: its size and heaviest domains."""
    lines = []
    for j, row in enumerate(np.asarray(bases)):
        order = np.argsort(-row)[:top]
        heaviest = ", ".join(f"{names[i]} {row[i]:.2f}" for i in order if row[i] > 0)
        lines.append(f"base_{j}: {int(np.sum(row > 0))} domains; {heaviest}")
    return lines
