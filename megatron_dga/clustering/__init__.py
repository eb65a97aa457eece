"""Clustering documents into domains from their embeddings.

The paper's generic domains are k-means clusters of document embeddings, and importance
sampling needs the specific set's histogram over the same clusters. The steps, one module
each:

- `corpus`: read documents (through `megatron_dga.data.jsonl`) and keep a bounded prefix;
- `embedders`: MiniLM sentence embeddings or the cheap TF-IDF + SVD fallback;
- `cache`: embeddings on disk keyed by what decides them, so a re-run does not embed again;
- `kmeans`: seeded spherical k-means with faiss and nearest-centroid assignment;
- `per_input`: instead of k-means, one cluster per input file, named as its domain;
- `describe`: sizes, top terms and sample documents of each cluster;
- `outputs`: the per-cluster JSONL files, `centroids.npy`, `clusters.json`, histograms;
- `pipeline`: the two jobs of `tools/cluster_domains.py`, clustering and assignment.
"""

from megatron_dga.clustering.pipeline import (
    AssignConfig,
    ClusterConfig,
    assign_documents,
    cluster_documents,
)

__all__ = ["AssignConfig", "ClusterConfig", "assign_documents", "cluster_documents"]
