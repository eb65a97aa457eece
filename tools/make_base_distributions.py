#!/usr/bin/env python
"""Base distributions for `--dga-base-distributions`, by clustering the domains' centroids.

    python tools/make_base_distributions.py --clusters-dir clusters/ --domains-manifest data/domains.json \
        --num-bases 16 --output bases.json

Reads the centroids a clustering run wrote (clusters/centroids.npy, one row per cluster_NNN
domain) and the token count of each domain (the domains.json of tools/build_domains.py, which
may list a subset of the clusters),
groups the k centroids into N groups with seeded spherical k-means, and writes an N x k matrix:
base j holds the domains of group j, in proportion to their training tokens. JSON:
{"bases": [[...], ...], "groups": [...], "domains": [...]}.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_dga.clustering.bases import describe, group_bases  # noqa: E402
from megatron_dga.clustering.outputs import CENTROIDS_NPY, cluster_names  # noqa: E402
from megatron_dga.data.manifest import DomainsManifest  # noqa: E402
from megatron_dga.files import write_json  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clusters-dir", required=True, help="output folder of tools/cluster_domains.py")
    p.add_argument("--domains-manifest", required=True, help="domains.json of the clusters (tools/build_domains.py)")
    p.add_argument("--num-bases", type=int, required=True, help="N, the number of base distributions")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--output", required=True, help="JSON file to write")
    a = p.parse_args(argv)
    centroids_path = os.path.join(a.clusters_dir, CENTROIDS_NPY)
    if not os.path.exists(centroids_path):
        p.error(f"--clusters-dir: {centroids_path} not found (run tools/cluster_domains.py first)")
    centroids = np.load(centroids_path)
    manifest = DomainsManifest.load(a.domains_manifest)
    # Centroid row i is domain cluster_<i>. The manifest may hold a subset of the clusters (the
    # others left out, e.g. for being too small); the bases' columns follow the manifest's
    # order, which is the order training numbers the domains in.
    row_of = {name: i for i, name in enumerate(cluster_names(len(centroids)))}
    unknown = [n for n in manifest.names if n not in row_of]
    if unknown:
        p.error(f"--domains-manifest {a.domains_manifest}: {len(unknown)} domains are not clusters of "
                f"{centroids_path} ({unknown[0]} ...)")
    rows = [row_of[n] for n in manifest.names]
    tokens = np.array([d.tokens for d in manifest.domains], dtype=np.float64)
    try:
        result = group_bases(centroids[rows], tokens, a.num_bases, a.seed)
    except ValueError as e:
        p.error(str(e))
    bases, groups = np.array(result["bases"]), np.array(result["groups"])
    write_json(a.output, {"bases": bases.tolist(), "groups": groups.tolist(), "domains": manifest.names})
    print("\n".join(describe(bases, manifest.names)))
    print(f"wrote {a.output}: {a.num_bases} bases over {len(manifest.names)} domains")
    return 0


if __name__ == "__main__":
    sys.exit(main())
