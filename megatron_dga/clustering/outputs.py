"""Files a clustering run leaves in its output folder.

- `cluster_000.jsonl` ...: every document of a cluster, its original JSON line with a
  `"cluster"` field added. The folder is a valid input of `tools/build_domains.py`
  (one `<domain>.jsonl` per domain), so cluster files are named like domains. Not written
  with one cluster per input file: those clusters are the input files themselves;
- `centroids.npy`: (k, d) float32 unit centroids, row i belongs to the i-th cluster of
  `clusters.json` (`cluster_<i>`, or the i-th input's domain name);
- `embedder_state.npz`: the fitted TF-IDF vocabulary and projection (TF-IDF only);
- `clusters.json`: embedder, seed, inputs and, per cluster, sizes, top terms and samples;
- `assign_<name>.json`: a specific set's histogram over the clusters.

Every file is written under a temporary name and moved into place.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from contextlib import ExitStack
from typing import Dict, Iterable, List, Sequence, Set, Tuple

import numpy as np

from megatron_dga.files import atomic_open, write_json
from megatron_dga.clustering.corpus import Document, first_line
from megatron_dga.data.jsonl import open_binary  # compressed inputs are copied as they were read

CLUSTERS_JSON = "clusters.json"
CENTROIDS_NPY = "centroids.npy"
EMBEDDER_STATE_NPZ = "embedder_state.npz"
CLUSTERS_VERSION = 1

# Input files are read once per group of clusters: one open file per cluster would run
# into the open-file limit (often 1024) for large k.
MAX_OPEN_FILES = 128

_CLUSTER_FILE = re.compile(r"^cluster_\d+\.jsonl$")
_ASSIGN_FILE = re.compile(r"^assign_.+\.json$")


def cluster_names(k: int) -> List[str]:
    width = max(3, len(str(k - 1)))
    return [f"cluster_{i:0{width}d}" for i in range(k)]


def remove_stale_outputs(out_dir: str, keep: Iterable[str]) -> List[str]:
    """Delete cluster files and histograms of an earlier run with other centroids.

    A leftover `cluster_017.jsonl` from a run with more clusters would otherwise be
    tokenized as a domain, and an old histogram would describe clusters that are gone.
    """
    keep = set(keep)
    removed = []
    for name in sorted(os.listdir(out_dir)):
        if name not in keep and (_CLUSTER_FILE.match(name) or _ASSIGN_FILE.match(name)):
            os.remove(os.path.join(out_dir, name))
            removed.append(name)
    return removed


def write_cluster_files(
    out_dir: str,
    docs: Sequence[Document],
    labels: np.ndarray,
    names: Sequence[str],
    wanted_fields: Set[int],
) -> Dict[int, dict]:
    """Copy each document's original line into its cluster's file.

    Returns the parsed JSON objects of the documents listed in `wanted_fields` (the
    samples shown in clusters.json), read along the way.
    """
    by_path: Dict[str, Dict[int, Tuple[int, int]]] = defaultdict(dict)
    for i, (doc, label) in enumerate(zip(docs, labels)):
        by_path[doc.path][doc.line_no] = (int(label), i)
    objects: Dict[int, dict] = {}
    for first in range(0, len(names), MAX_OPEN_FILES):
        group = range(first, min(first + MAX_OPEN_FILES, len(names)))
        with ExitStack() as stack:
            # On an error every file of the group keeps its old content.
            files = [stack.enter_context(atomic_open(os.path.join(out_dir, f"{names[c]}.jsonl"))) for c in group]
            for path, lines in by_path.items():
                last = max(lines)
                for line_no, raw in _numbered_lines(path):
                    if line_no > last:  # the rest of the file was left out by --max-docs
                        break
                    label, index = lines.get(line_no, (-1, -1))
                    if label not in group:
                        continue
                    try:
                        obj = json.loads(raw)
                    except ValueError:
                        raise ValueError(f"{path}:{line_no}: changed while it was being clustered") from None
                    if index in wanted_fields:
                        objects[index] = obj
                    obj["cluster"] = label
                    files[label - first].write(json.dumps(obj, ensure_ascii=False) + "\n")
    return objects


def read_objects(docs: Sequence[Document], indices: Iterable[int]) -> Dict[int, dict]:
    """The parsed JSON lines of `docs[i]` for every i in `indices` (samples shown in clusters.json)."""
    by_path: Dict[str, Dict[int, int]] = defaultdict(dict)
    for i in indices:
        by_path[docs[i].path][docs[i].line_no] = i
    objects: Dict[int, dict] = {}
    for path, lines in by_path.items():
        last = max(lines)
        for line_no, raw in _numbered_lines(path):
            if line_no > last:
                break
            if line_no in lines:
                try:
                    objects[lines[line_no]] = json.loads(raw)
                except ValueError:
                    raise ValueError(f"{path}:{line_no}: changed while it was being clustered") from None
    return objects


def _numbered_lines(path: str):
    """(line number, raw line) numbered as `megatron_dga.data.jsonl.iter_documents` numbers them."""
    with open_binary(path) as f:
        yield from enumerate(f, start=1)


def sample_entry(doc: Document, obj: dict) -> dict:
    entry = {"first_line": first_line(doc.text), "input": os.path.basename(doc.path), "line": doc.line_no}
    for key in ("title", "src"):
        if isinstance(obj.get(key), str):
            entry[key] = obj[key]
    return entry


def write_clusters_json(out_dir: str, summary: dict) -> str:
    path = os.path.join(out_dir, CLUSTERS_JSON)
    write_json(path, {"version": CLUSTERS_VERSION, **summary})
    return path


def read_clusters_json(directory: str) -> dict:
    path = os.path.join(directory, CLUSTERS_JSON)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{path} not found: assignment needs the output folder of a clustering run"
        ) from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON (line {e.lineno}): {e.msg}") from None
    if meta.get("version") != CLUSTERS_VERSION:
        raise ValueError(f"{path}: unsupported version {meta.get('version')!r}")
    return meta
