"""Embedding cache: `<dir>/<embedder>-<key>.npy`, keyed by the texts and the embedder.

The key hashes the embedder's `identity()` and every embedded text (length-prefixed, so
that two different lists never hash alike), so any change of input, prefix length or
model parameters misses the cache instead of returning stale vectors. An embedder with
fitted state (TF-IDF) stores it next to the vectors, because vectors without the
projection that made them could not embed a specific set later.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from megatron_dga.files import write_npy, write_npz


def cache_key(identity: Dict, texts: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for text in texts:
        data = text.encode("utf-8", "surrogatepass")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:32]


class EmbeddingCache:
    def __init__(self, directory: str):
        self.directory = directory

    def _paths(self, name: str, key: str) -> Tuple[str, str]:
        stem = os.path.join(self.directory, f"{name}-{key}")
        return f"{stem}.npy", f"{stem}.state.npz"

    def load(self, name: str, key: str) -> Optional[Tuple[np.ndarray, Optional[Dict[str, np.ndarray]]]]:
        """(vectors, fitted state or None), or None on a miss."""
        vectors_path, state_path = self._paths(name, key)
        if not os.path.exists(vectors_path):
            return None
        vectors = np.load(vectors_path)
        state = None
        if os.path.exists(state_path):
            with np.load(state_path) as npz:
                state = {k: npz[k] for k in npz.files}
        return vectors, state

    def store(self, name: str, key: str, vectors: np.ndarray, state: Optional[Dict[str, np.ndarray]]) -> str:
        os.makedirs(self.directory, exist_ok=True)
        vectors_path, state_path = self._paths(name, key)
        # State first: the vectors file is what marks an entry complete.
        if state is not None:
            write_npz(state_path, state)
        write_npy(vectors_path, vectors)
        return vectors_path
