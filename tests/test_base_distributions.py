"""tools/make_base_distributions.py: bases from the geometry of the clusters, readable by training."""

import json
import os
import subprocess
import sys

import numpy as np

from megatron_dga.clustering.outputs import cluster_names
from megatron_dga.data.manifest import DomainEntry, DomainsManifest, TokenizerInfo
from megatron_dga.mixing.factory import load_base_distributions

TOOL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "make_base_distributions.py")


def test_bases_follow_the_groups_of_centroids(tmp_path):
    rng = np.random.default_rng(0)
    k, groups = 40, 4
    planted = np.arange(k) % groups
    directions = np.linalg.qr(rng.normal(size=(16, groups)))[0].T  # 4 orthogonal directions
    centroids = directions[planted] + 0.05 * rng.normal(size=(k, 16))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    np.save(tmp_path / "centroids.npy", centroids.astype(np.float32))
    names = cluster_names(k)
    tokens = rng.integers(100, 1000, k)
    # The manifest lists the domains in another order than the centroids.
    order = rng.permutation(k)
    entries = [DomainEntry(names[i], names[i], 1, int(tokens[i])) for i in order]
    DomainsManifest(TokenizerInfo("synthetic", None, 256, 255), entries).save(str(tmp_path / "domains.json"))
    out = tmp_path / "bases.json"
    subprocess.run([sys.executable, TOOL, "--clusters-dir", str(tmp_path), "--domains-manifest",
                    str(tmp_path / "domains.json"), "--num-bases", str(groups), "--output", str(out)], check=True)

    bases = load_base_distributions(str(out), k)  # what --dga-base-distributions reads
    manifest_names = json.loads(out.read_text())["domains"]
    assert manifest_names == [names[i] for i in order]
    np.testing.assert_allclose(bases.sum(axis=1), 1.0)
    assert np.all((bases > 0).sum(axis=0) == 1)  # every domain in exactly one base
    for row in bases:  # each base is one planted group, weighted by tokens
        members = [int(manifest_names[c].split("_")[1]) for c in np.flatnonzero(row)]
        assert len(set(planted[members])) == 1 and len(members) == k // groups
        np.testing.assert_allclose(row[np.flatnonzero(row)], tokens[members] / tokens[members].sum())


def test_a_manifest_of_other_domains_is_refused(tmp_path):
    np.save(tmp_path / "centroids.npy", np.eye(3, dtype=np.float32))
    DomainsManifest(TokenizerInfo("synthetic", None, 256, 255),
                    [DomainEntry("code", "code", 1, 10)]).save(str(tmp_path / "domains.json"))
    result = subprocess.run([sys.executable, TOOL, "--clusters-dir", str(tmp_path), "--domains-manifest",
                             str(tmp_path / "domains.json"), "--num-bases", "2", "--output",
                             str(tmp_path / "b.json")], capture_output=True, text=True)
    assert result.returncode != 0 and "1 domains are not clusters of" in result.stderr
    assert not (tmp_path / "b.json").exists()


def test_a_manifest_may_leave_clusters_out(tmp_path):
    np.save(tmp_path / "centroids.npy", np.eye(4, dtype=np.float32))
    names = cluster_names(4)
    DomainsManifest(TokenizerInfo("synthetic", None, 256, 255),
                    [DomainEntry(names[i], names[i], 1, 10) for i in (3, 0, 1)]).save(str(tmp_path / "domains.json"))
    subprocess.run([sys.executable, TOOL, "--clusters-dir", str(tmp_path), "--domains-manifest",
                    str(tmp_path / "domains.json"), "--num-bases", "3", "--output", str(tmp_path / "b.json")],
                   check=True, capture_output=True)
    bases = load_base_distributions(str(tmp_path / "b.json"), 3)
    assert bases.shape == (3, 3) and np.all((bases > 0).sum(axis=0) == 1)
