"""One cluster per input file: a centroid for each source domain instead of k-means.

Importance sampling over the corpus' own domains needs a histogram whose cluster names are
the training domain names. Here every input file is a cluster, named as
`tools/build_domains.py` names the domain it makes of that file (`docs_python.jsonl.xz` ->
`docs_python`), and its centroid is the L2-normalised mean of its documents' unit
embeddings: the direction with the largest total cosine similarity to them, as a spherical
k-means centroid is for its members.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

from megatron_dga.clustering.corpus import Document

# The input names tools/build_domains.py turns into domains.
DOMAIN_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.xz")
FLAG = "--centroids-per-input"


@dataclass
class PerInputResult:
    centroids: np.ndarray  # (k, d) float32 unit rows, row i belongs to input i
    labels: np.ndarray  # (n,) int64 input of each document
    similarity: np.ndarray  # (n,) float32 cosine to its input's centroid


def domain_name(path: str) -> str:
    """`corpus/docs_python.jsonl.xz` -> `docs_python`."""
    base = os.path.basename(path)
    for suffix in DOMAIN_SUFFIXES:
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    raise ValueError(f"{FLAG}: input {path} is not named <domain>{'|'.join(DOMAIN_SUFFIXES)}, so it names no domain")


def domain_names(paths: Sequence[str]) -> List[str]:
    """Domain name of every input; two inputs of one name would merge two domains, so that is an error."""
    first_path = {}
    for path in paths:
        name = domain_name(path)
        if name in first_path:
            raise ValueError(f"{FLAG}: inputs {first_path[name]} and {path} both name domain {name!r}")
        first_path[name] = path
    return list(first_path)


def input_labels(docs: Sequence[Document], paths: Sequence[str]) -> np.ndarray:
    index = {path: i for i, path in enumerate(paths)}
    return np.array([index[doc.path] for doc in docs], dtype=np.int64)


def mean_centroids(vectors: np.ndarray, labels: np.ndarray, paths: Sequence[str]) -> np.ndarray:
    """Normalised mean embedding of each input's documents."""
    centroids = np.zeros((len(paths), vectors.shape[1]), dtype=np.float32)
    for i, path in enumerate(paths):
        members = vectors[labels == i]
        if len(members) == 0:
            raise ValueError(f"{FLAG}: input {path} has no documents, so no centroid")
        total = members.sum(axis=0, dtype=np.float64)
        norm = np.linalg.norm(total)
        if norm == 0:  # every document embedded as zero: no direction to point at
            raise ValueError(f"{FLAG}: no document of {path} has a word the embedder knows, so no centroid")
        centroids[i] = total / norm
    return centroids


def fit_per_input(vectors: np.ndarray, docs: Sequence[Document], paths: Sequence[str]) -> PerInputResult:
    labels = input_labels(docs, paths)
    centroids = mean_centroids(vectors, labels, paths)
    similarity = np.einsum("nd,nd->n", vectors.astype(np.float32), centroids[labels])
    return PerInputResult(centroids=centroids, labels=labels, similarity=similarity)
