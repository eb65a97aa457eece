#!/usr/bin/env python
"""Cluster documents into domains by their embeddings, or map a specific set onto clusters.

Clustering (writes OUT/cluster_000.jsonl ..., OUT/centroids.npy, OUT/clusters.json):

    python tools/cluster_domains.py --input generic/*.jsonl --output-dir OUT --num-clusters 16

OUT is then a domains folder for tools/build_domains.py (domain `cluster_000`, ...).

Assignment (writes OUT/assign_<name>.json: counts and weights per cluster, the input of
importance sampling):

    python tools/cluster_domains.py --assign specific.jsonl --centroids OUT/centroids.npy

Both in one run: give --input, --output-dir, --num-clusters and --assign together.

One cluster per input file instead of k-means (writes OUT/centroids.npy and OUT/clusters.json,
no cluster files): each cluster is named after its file as a domain (corpus/docs_python.jsonl ->
docs_python), so an assignment histogram weighs the corpus' own domains:

    python tools/cluster_domains.py --input corpus/*.jsonl --output-dir OUT --centroids-per-input
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_dga.clustering import AssignConfig, ClusterConfig, assign_documents, cluster_documents  # noqa: E402
from megatron_dga.clustering.embedders import EMBEDDERS  # noqa: E402
from megatron_dga.data.jsonl import BadDocumentError  # noqa: E402


KMEANS_DEFAULTS = {"seed": 1234, "niter": 25, "restarts": 5}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=(
            "Long documents are embedded from a prefix only (--max-chars): MiniLM reads at most "
            "256 word pieces anyway. Embeddings are cached under --cache-dir, keyed by the texts "
            "and the embedder, so a re-run (for example with another --seed, --num-clusters "
            "or --centroids-per-input) does not embed again."
        ),
    )
    g = p.add_argument_group("clustering")
    g.add_argument("--input", nargs="+", metavar="JSONL", help="JSONL files of generic documents to cluster")
    g.add_argument("--output-dir", metavar="DIR", help="folder for centroids.npy, clusters.json and (k-means) the cluster files")
    g.add_argument("--num-clusters", type=int, metavar="K", help="number of clusters (domains), at most the number of documents")
    g.add_argument(
        "--centroids-per-input",
        action="store_true",
        help="instead of k-means (and --num-clusters): every --input file is one cluster, named after "
        "the file as a domain (docs_python.jsonl.xz -> docs_python), its centroid the normalised mean "
        "embedding of its documents. No cluster files are written: the inputs are the domains",
    )
    g.add_argument(
        "--embedder",
        choices=sorted(EMBEDDERS),
        default=None,
        help="minilm: all-MiniLM-L6-v2 sentence embeddings (default; tens of documents/s on a CPU, "
        "see docs/clustering.md); "
        "tfidf: TF-IDF + truncated SVD, seconds for thousands of documents. "
        "With --assign alone, the embedder recorded in clusters.json is used",
    )
    # Defaults are filled in after check_args, which refuses k-means flags with --centroids-per-input.
    g.add_argument("--seed", type=int, help=f"k-means seed; a fixed seed gives the same clusters (default {KMEANS_DEFAULTS['seed']})")
    g.add_argument("--niter", type=int, help=f"k-means iterations (default {KMEANS_DEFAULTS['niter']})")
    g.add_argument(
        "--restarts",
        type=int,
        help="k-means runs from different starts; the best (highest total cosine similarity) is kept "
        f"(default {KMEANS_DEFAULTS['restarts']})",
    )

    g = p.add_argument_group("assignment")
    g.add_argument("--assign", nargs="+", metavar="JSONL", help="JSONL files of the specific set: write its histogram over the clusters")
    g.add_argument(
        "--centroids",
        metavar="NPY",
        help="centroids.npy of a clustering run (its folder must hold clusters.json); default: "
        "OUTPUT_DIR/centroids.npy. With both, the histogram is written to OUTPUT_DIR",
    )
    g.add_argument("--assign-name", metavar="NAME", help="name of the histogram file assign_NAME.json (default: the --assign file's name without .jsonl)")

    g = p.add_argument_group("input and embedding")
    g.add_argument("--json-keys", nargs="+", default=["text"], metavar="KEY", help="JSON key holding each document's text (one key; default: text)")
    g.add_argument("--max-docs", type=int, metavar="N", help="read at most N documents from each input file (--input and --assign)")
    g.add_argument("--max-chars", type=int, metavar="N", help="embed only the first N characters of each document (default: 2048 for minilm, 8192 for tfidf)")
    g.add_argument("--batch-size", type=int, metavar="N", help="documents per embedding batch (default: 32 for minilm, 4096 for tfidf)")
    g.add_argument("--cache-dir", metavar="DIR", help="embedding cache (default: the clusters folder's cache/, OUTPUT_DIR/cache)")
    g.add_argument("--skip-bad-lines", action="store_true", help="skip (and count) unusable JSONL lines instead of stopping at the first one")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def check_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    clustering = args.input is not None
    if not clustering and not args.assign:
        p.error("nothing to do: give --input (clustering) and/or --assign (assignment)")
    if clustering:
        if not args.output_dir:
            p.error("--input needs --output-dir")
        if args.centroids_per_input:
            check_per_input_args(p, args)
        elif args.num_clusters is None:
            p.error("--input needs --num-clusters (or --centroids-per-input)")
        elif args.num_clusters < 1:
            p.error(f"--num-clusters must be at least 1, got {args.num_clusters}")
        if args.centroids:
            p.error("--centroids is for assignment to an earlier run; with --input the new centroids are used")
    else:
        if args.centroids_per_input:
            p.error("--centroids-per-input applies to clustering (--input)")
        for flag in ("num_clusters", "embedder", "max_chars"):
            if getattr(args, flag) is not None:
                p.error(f"--{flag.replace('_', '-')} applies to clustering (--input); assignment uses what clusters.json records")
        if not args.centroids and not args.output_dir:
            p.error("--assign needs --centroids or the --output-dir of a clustering run")
    if args.assign and len(args.assign) > 1 and not args.assign_name:
        p.error("--assign with several files needs --assign-name")
    if len(args.json_keys) != 1:
        p.error(f"--json-keys: one key holds the text to cluster, got {len(args.json_keys)}")
    for flag in ("max_docs", "max_chars", "batch_size", "niter", "restarts"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")


def check_per_input_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """k-means flags would be silently ignored with --centroids-per-input: refuse them."""
    for flag in ("num_clusters", *KMEANS_DEFAULTS):
        if getattr(args, flag) is not None:
            p.error(f"--{flag.replace('_', '-')} applies to k-means, not to --centroids-per-input (one cluster per --input file)")


def fill_kmeans_defaults(args: argparse.Namespace) -> None:
    for flag, default in KMEANS_DEFAULTS.items():
        if getattr(args, flag) is None:
            setattr(args, flag, default)


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    check_args(p, args)
    fill_kmeans_defaults(args)
    # Our progress messages, but not the INFO chatter of libraries (faiss reports its loader).
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("megatron_dga").setLevel(logging.INFO)
    progress = not args.no_progress
    try:
        clusters_dir = args.output_dir
        if args.input is not None:
            summary = cluster_documents(
                ClusterConfig(
                    inputs=args.input,
                    output_dir=args.output_dir,
                    num_clusters=args.num_clusters,
                    embedder=args.embedder or "minilm",
                    seed=args.seed,
                    json_key=args.json_keys[0],
                    cache_dir=args.cache_dir,
                    batch_size=args.batch_size,
                    max_docs=args.max_docs,
                    max_chars=args.max_chars,
                    skip_bad=args.skip_bad_lines,
                    niter=args.niter,
                    restarts=args.restarts,
                    progress=progress,
                    per_input=args.centroids_per_input,
                )
            )
            for c in summary["clusters"]:
                print(f"{c['name']}: {c['documents']} docs, {c['characters']} chars, {' '.join(c['top_terms'][:6])}")
            print(f"wrote {os.path.join(args.output_dir, 'clusters.json')}")
        if args.assign:
            if args.centroids:
                clusters_dir = os.path.dirname(os.path.abspath(args.centroids))
            histogram = assign_documents(
                AssignConfig(
                    inputs=args.assign,
                    clusters_dir=clusters_dir,
                    centroids=args.centroids,
                    output_dir=args.output_dir,
                    name=args.assign_name,
                    json_key=args.json_keys[0],
                    cache_dir=args.cache_dir,
                    batch_size=args.batch_size,
                    max_docs=args.max_docs,
                    skip_bad=args.skip_bad_lines,
                    progress=progress,
                )
            )
            top = sorted(zip(histogram["weights"], histogram["clusters"]), reverse=True)[:5]
            print("specific set: " + ", ".join(f"{n} {w:.3f}" for w, n in top))
            print(f"wrote {histogram['path']}")
    except (BadDocumentError, FileNotFoundError, ValueError, ImportError) as e:
        # BadDocumentError already reads "path:line: reason"; the others name their file or flag.
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
