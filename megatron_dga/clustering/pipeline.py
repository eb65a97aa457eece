"""The two jobs of `tools/cluster_domains.py`: cluster a corpus, assign a specific set.

Clustering reads the generic documents, embeds them (or takes the embeddings from the
cache), runs k-means (or takes each input file as one cluster, see `per_input`) and writes
the output folder described in `outputs`. Assignment embeds another set the way
`clusters.json` says the clusters were made and counts how many of its documents fall
nearest to each centroid: the histogram importance sampling needs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from megatron_dga.clustering import describe
from megatron_dga.files import write_json, write_npy, write_npz
from megatron_dga.clustering.cache import EmbeddingCache, cache_key
from megatron_dga.clustering.corpus import Document, load_documents
from megatron_dga.clustering.embedders import Embedder, embedder_from_identity, make_embedder
from megatron_dga.clustering.kmeans import assign, fit_kmeans
from megatron_dga.clustering.outputs import (
    CENTROIDS_NPY,
    CLUSTERS_JSON,
    EMBEDDER_STATE_NPZ,
    cluster_names,
    read_clusters_json,
    read_objects,
    remove_stale_outputs,
    sample_entry,
    write_cluster_files,
    write_clusters_json,
)
from megatron_dga.clustering.per_input import domain_names, fit_per_input
from megatron_dga.data.jsonl import SkipCounter

log = logging.getLogger(__name__)


@dataclass
class ClusterConfig:
    inputs: List[str]
    output_dir: str
    num_clusters: Optional[int]  # k-means; None with per_input
    embedder: str = "minilm"
    seed: int = 1234
    json_key: str = "text"
    cache_dir: Optional[str] = None  # default: <output_dir>/cache
    batch_size: Optional[int] = None  # default: the embedder's
    max_docs: Optional[int] = None  # per input file
    max_chars: Optional[int] = None  # default: the embedder's
    skip_bad: bool = False
    niter: int = 25
    restarts: int = 5
    samples_per_cluster: int = 3
    progress: bool = True
    per_input: bool = False  # one cluster per input file, named after it, instead of k-means


@dataclass
class AssignConfig:
    inputs: List[str]
    clusters_dir: str  # output folder of a clustering run (clusters.json, embedder state)
    centroids: Optional[str] = None  # default: <clusters_dir>/centroids.npy
    output_dir: Optional[str] = None  # where assign_<name>.json goes; default: clusters_dir
    name: Optional[str] = None  # default: the input file's name without .jsonl
    json_key: str = "text"
    cache_dir: Optional[str] = None  # default: <clusters_dir>/cache
    batch_size: Optional[int] = None
    max_docs: Optional[int] = None
    skip_bad: bool = False
    progress: bool = True


def _load(inputs: Sequence[str], cfg, max_chars: int) -> List[Document]:
    skipped = SkipCounter()
    docs = load_documents(inputs, cfg.json_key, max_chars, cfg.max_docs, cfg.skip_bad, skipped)
    if skipped.total:
        log.warning("skipped %d bad lines: %s", skipped.total, skipped.summary())
    if not docs:
        raise ValueError(f"no documents under key {cfg.json_key!r} in {', '.join(inputs)}")
    return docs


def embed_with_cache(embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache, fit: bool, progress: bool = True) -> np.ndarray:
    """Embeddings of `texts`, from the cache when this embedder has embedded them before.

    With `fit`, an embedder that learns from its corpus is fitted on `texts` first (or its
    fitted state is restored from the cache entry).
    """
    key = cache_key(embedder.identity(), texts)
    hit = cache.load(embedder.name, key)
    needs_state = fit and embedder.fits_corpus
    if hit is not None and len(hit[0]) == len(texts) and (hit[1] is not None or not needs_state):
        vectors, state = hit
        if needs_state:
            embedder.load_state(state)
        log.info("embeddings: %d from cache %s", len(vectors), cache.directory)
        return vectors
    start = time.perf_counter()
    embedder.load()
    if time.perf_counter() - start > 0.5:
        log.info("%s embedder loaded in %.1f s", embedder.name, time.perf_counter() - start)
    start = time.perf_counter()
    if needs_state:
        embedder.fit(texts)
    vectors = embedder.embed(texts, progress=progress)
    seconds = time.perf_counter() - start
    log.info("embeddings: %d documents in %.1f s (%.1f docs/s)", len(texts), seconds, len(texts) / max(seconds, 1e-9))
    cache.store(embedder.name, key, vectors, embedder.state_arrays() if needs_state else None)
    return vectors


def _warn_empty_vectors(vectors: np.ndarray, consequence: str = "put in the first cluster") -> None:
    empty = int((np.abs(vectors).sum(axis=1) == 0).sum())
    if empty:
        # A zero vector is equally far from every centroid; faiss then picks the first one.
        log.warning("%d documents have no word the embedder knows: zero embedding, %s", empty, consequence)


def cluster_documents(cfg: ClusterConfig) -> dict:
    """Cluster `cfg.inputs` into domains; returns what clusters.json holds.

    k-means into `cfg.num_clusters` clusters, or with `cfg.per_input` one cluster per input file.
    """
    if cfg.per_input:
        return _cluster_per_input(cfg)
    return _cluster_kmeans(cfg)


def _cluster_kmeans(cfg: ClusterConfig) -> dict:
    if cfg.num_clusters is None or cfg.num_clusters < 1:
        raise ValueError(f"--num-clusters must be at least 1, got {cfg.num_clusters}")
    embedder = make_embedder(cfg.embedder, cfg.max_chars, cfg.batch_size)
    docs, k = _load(cfg.inputs, cfg, embedder.max_chars), cfg.num_clusters
    if k > len(docs):
        raise ValueError(f"--num-clusters {k} is larger than the number of documents ({len(docs)})")
    log.info("%d documents from %d files", len(docs), len(cfg.inputs))

    names = cluster_names(k)
    _refuse_to_overwrite_inputs(cfg.inputs, cfg.output_dir, names)
    texts, vectors = _embed_corpus(cfg, embedder, docs)
    _warn_empty_vectors(vectors)

    start = time.perf_counter()
    result = fit_kmeans(vectors, k, cfg.seed, cfg.niter, cfg.restarts)
    log.info("k-means: %d clusters in %.1f s", k, time.perf_counter() - start)

    samples = describe.nearest_documents(result.labels, result.similarity, k, cfg.samples_per_cluster)
    objects = write_cluster_files(cfg.output_dir, docs, result.labels, names, {i for s in samples for i in s})
    state_file = _write_centroids_and_state(cfg.output_dir, result.centroids, embedder)

    stats = _cluster_stats(docs, texts, result.labels, k, samples, objects)
    empty = [names[c] for c in range(k) if stats[c]["documents"] == 0]
    if empty:
        log.warning("empty clusters (their files are empty): %s", ", ".join(empty))
    summary = {
        "embedder": embedder.identity(),
        "embedder_state": state_file,
        "seed": cfg.seed,
        "num_clusters": k,
        "kmeans": {"library": "faiss", "spherical": True, "niter": cfg.niter, "restarts": cfg.restarts, "objective": result.objective},
        **_corpus_fields(cfg, docs),
        "clusters": [{"id": c, "name": names[c], "file": f"{names[c]}.jsonl", **stats[c]} for c in range(k)],
    }
    _replace_clusters_json(cfg.output_dir, summary, keep=[f"{n}.jsonl" for n in names])
    return summary


def _cluster_per_input(cfg: ClusterConfig) -> dict:
    if cfg.num_clusters is not None:
        raise ValueError("--num-clusters does not apply with --centroids-per-input: every input file is one cluster")
    names = domain_names(cfg.inputs)  # before embedding: a naming clash should not cost an embedding run
    embedder = make_embedder(cfg.embedder, cfg.max_chars, cfg.batch_size)
    docs, k = _load(cfg.inputs, cfg, embedder.max_chars), len(names)
    log.info("%d documents from %d files, one cluster per file", len(docs), k)

    texts, vectors = _embed_corpus(cfg, embedder, docs)
    _warn_empty_vectors(vectors, "adding nothing to their input's centroid")
    result = fit_per_input(vectors, docs, cfg.inputs)

    samples = describe.nearest_documents(result.labels, result.similarity, k, cfg.samples_per_cluster)
    objects = read_objects(docs, [i for s in samples for i in s])
    state_file = _write_centroids_and_state(cfg.output_dir, result.centroids, embedder)

    stats = _cluster_stats(docs, texts, result.labels, k, samples, objects)
    summary = {
        "embedder": embedder.identity(),
        "embedder_state": state_file,
        "mode": "per-input",
        "num_clusters": k,
        **_corpus_fields(cfg, docs),
        "clusters": [
            {"id": c, "name": names[c], "input": os.path.abspath(cfg.inputs[c]), **stats[c]} for c in range(k)
        ],
    }
    # The inputs are the clusters' documents: an input that sits in the output folder under a
    # cluster file's name (cluster_003.jsonl of an earlier k-means run) is not a stale output.
    _replace_clusters_json(cfg.output_dir, summary, keep=_inputs_in(cfg.output_dir, cfg.inputs))
    return summary


def _embed_corpus(cfg: ClusterConfig, embedder: Embedder, docs: Sequence[Document]):
    """(texts, unit embeddings) of the documents to cluster, fitting the embedder on them."""
    os.makedirs(cfg.output_dir, exist_ok=True)
    cache = EmbeddingCache(cfg.cache_dir or os.path.join(cfg.output_dir, "cache"))
    texts = [d.text for d in docs]
    vectors = embed_with_cache(embedder, texts, cache, fit=True, progress=cfg.progress)
    return texts, vectors


def _write_centroids_and_state(out_dir: str, centroids: np.ndarray, embedder: Embedder) -> Optional[str]:
    """centroids.npy and the fitted embedder state beside it; returns the state's file name, if any."""
    write_npy(os.path.join(out_dir, CENTROIDS_NPY), centroids)
    state = embedder.state_arrays()
    state_path = os.path.join(out_dir, EMBEDDER_STATE_NPZ)
    if state is not None:
        write_npz(state_path, state)
        return EMBEDDER_STATE_NPZ
    if os.path.exists(state_path):  # left by an earlier TF-IDF run: not these clusters'
        os.remove(state_path)
    return None


def _cluster_stats(docs, texts, labels, k, samples, objects) -> List[dict]:
    """Per cluster: sizes, top terms, documents per input file and samples, in clusters.json order."""
    sizes = describe.sizes(docs, labels, k)
    terms = describe.top_terms(texts, labels, k)
    sources = describe.sources(docs, labels, k)
    return [
        {
            "documents": sizes["documents"][c],
            "characters": sizes["characters"][c],
            "top_terms": terms[c],
            "inputs": sources[c],
            "samples": [sample_entry(docs[i], objects.get(i, {})) for i in samples[c]],
        }
        for c in range(k)
    ]


def _corpus_fields(cfg: ClusterConfig, docs: Sequence[Document]) -> dict:
    return {
        "json_key": cfg.json_key,
        "inputs": [os.path.abspath(p) for p in cfg.inputs],
        "max_docs_per_input": cfg.max_docs,
        "documents": len(docs),
        "characters": int(sum(d.chars for d in docs)),
        "centroids": CENTROIDS_NPY,
    }


def _replace_clusters_json(out_dir: str, summary: dict, keep: Sequence[str]) -> None:
    """Remove what an earlier run left that does not describe these clusters, then write clusters.json."""
    removed = remove_stale_outputs(out_dir, keep=keep)
    if removed:
        log.info("removed outputs of an earlier run: %s", ", ".join(removed))
    write_clusters_json(out_dir, summary)


def _inputs_in(out_dir: str, inputs: Sequence[str]) -> List[str]:
    """File names, in `out_dir`, of the inputs that are in it."""
    folder = os.path.realpath(out_dir)
    # The folder the name is in, not where a link points: the name is what stale removal sees.
    return [os.path.basename(p) for p in inputs if os.path.realpath(os.path.dirname(os.path.abspath(p))) == folder]


def _refuse_to_overwrite_inputs(inputs: Sequence[str], out_dir: str, names: Sequence[str]) -> None:
    """Cluster files are written while the inputs are read again: they must not be the same files."""
    outputs = {os.path.realpath(os.path.join(out_dir, f"{n}.jsonl")) for n in names}
    for path in inputs:
        if os.path.realpath(path) in outputs:
            raise ValueError(f"input {path} would be overwritten by the cluster files: choose another --output-dir")


def assign_name(inputs: Sequence[str]) -> str:
    if len(inputs) != 1:
        raise ValueError("--assign with several files needs --assign-name to name the histogram")
    base = os.path.basename(inputs[0])
    for ext in (".jsonl.gz", ".jsonl.xz", ".jsonl", ".json"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return base


def recorded_cluster_names(meta: dict, k: int, clusters_dir: str) -> List[str]:
    """Cluster names in centroid order as clusters.json lists them (`cluster_000` ... or domain names)."""
    names = [c.get("name") for c in meta.get("clusters", []) if isinstance(c, dict)]
    if len(names) != k or not all(isinstance(n, str) and n for n in names) or len(set(names)) != k:
        raise ValueError(f"{os.path.join(clusters_dir, CLUSTERS_JSON)}: does not name each of its {k} clusters once")
    return names


def assign_documents(cfg: AssignConfig) -> dict:
    """Histogram of `cfg.inputs` over the clusters of `cfg.clusters_dir`; written as JSON."""
    name = cfg.name or assign_name(cfg.inputs)
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"--assign-name {name!r}: must be a plain file name part")
    meta = read_clusters_json(cfg.clusters_dir)
    centroids_path = cfg.centroids or os.path.join(cfg.clusters_dir, meta.get("centroids", CENTROIDS_NPY))
    try:
        centroids = np.load(centroids_path)
    except FileNotFoundError:
        raise FileNotFoundError(f"--centroids: file not found: {centroids_path}") from None
    k = centroids.shape[0]
    if k != meta["num_clusters"]:
        raise ValueError(f"{centroids_path} has {k} centroids but clusters.json lists {meta['num_clusters']}")
    clusters = recorded_cluster_names(meta, k, cfg.clusters_dir)

    embedder = embedder_from_identity(meta["embedder"], cfg.batch_size)
    if meta.get("embedder_state"):
        state_path = os.path.join(cfg.clusters_dir, meta["embedder_state"])
        with np.load(state_path) as npz:
            embedder.load_state({key: npz[key] for key in npz.files})
    if embedder.identity() != meta["embedder"]:
        raise ValueError(
            f"embedder state in {cfg.clusters_dir} does not match clusters.json "
            f"({embedder.identity()} != {meta['embedder']})"
        )

    docs = _load(cfg.inputs, cfg, embedder.max_chars)
    cache = EmbeddingCache(cfg.cache_dir or os.path.join(cfg.clusters_dir, "cache"))
    vectors = embed_with_cache(embedder, [d.text for d in docs], cache, fit=False, progress=cfg.progress)
    _warn_empty_vectors(vectors)
    labels, similarity = assign(vectors, centroids)

    counts = np.bincount(labels, minlength=k)
    histogram = {
        "name": name,
        "inputs": [os.path.abspath(p) for p in cfg.inputs],
        "centroids": os.path.abspath(centroids_path),
        "embedder": meta["embedder"],
        "documents": len(docs),
        "clusters": clusters,
        "counts": counts.tolist(),
        "weights": (counts / counts.sum()).tolist(),
        "mean_similarity": float(similarity.mean()),
    }
    output_dir = cfg.output_dir or cfg.clusters_dir
    os.makedirs(output_dir, exist_ok=True)
    output = os.path.join(output_dir, f"assign_{name}.json")
    write_json(output, histogram)
    histogram["path"] = output
    return histogram
