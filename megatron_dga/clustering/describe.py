"""What a person needs to recognise a cluster: its size, top terms, typical documents.

Top terms are the words with the highest mean TF-IDF over the cluster's documents (English
stop words removed), computed on the same text prefixes that were embedded. Sample
documents are those nearest the centroid, which are more typical than the first ones read.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Dict, List, Sequence

import numpy as np

from megatron_dga.clustering.corpus import Document


def top_terms(texts: Sequence[str], labels: np.ndarray, k: int, n_terms: int = 10) -> List[List[str]]:
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(
        stop_words="english",
        sublinear_tf=True,
        min_df=2 if len(texts) >= 20 else 1,
        max_features=65536,
        dtype=np.float32,
    )
    try:
        x = vectorizer.fit_transform(texts)
    except ValueError:  # nothing but stop words and one-off tokens: no terms to show
        return [[] for _ in range(k)]
    vocab = vectorizer.get_feature_names_out()
    terms = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        if len(rows) == 0:
            terms.append([])
            continue
        mean = np.asarray(x[rows].mean(axis=0)).ravel()
        best = np.argsort(-mean, kind="stable")[:n_terms]
        terms.append([str(vocab[i]) for i in best if mean[i] > 0])
    return terms


def nearest_documents(labels: np.ndarray, similarity: np.ndarray, k: int, per_cluster: int = 3) -> List[List[int]]:
    """Indices of the `per_cluster` documents most similar to each centroid."""
    picks = []
    for c in range(k):
        rows = np.flatnonzero(labels == c)
        best = rows[np.argsort(-similarity[rows], kind="stable")[:per_cluster]]
        picks.append([int(i) for i in best])
    return picks


def sizes(docs: Sequence[Document], labels: np.ndarray, k: int) -> Dict[str, List[int]]:
    chars = np.zeros(k, dtype=np.int64)
    np.add.at(chars, labels, [d.chars for d in docs])
    return {
        "documents": np.bincount(labels, minlength=k).tolist(),
        "characters": chars.tolist(),
    }


def sources(docs: Sequence[Document], labels: np.ndarray, k: int) -> List[Dict[str, int]]:
    """Per cluster, how many documents came from each input file (by file name)."""
    counts = [Counter() for _ in range(k)]
    for doc, label in zip(docs, labels):
        counts[label][os.path.basename(doc.path)] += 1
    return [dict(c.most_common()) for c in counts]
