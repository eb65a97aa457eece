"""The unigram baseline: what a model that knows only token frequencies scores on the target.

An add-one (Laplace) smoothed unigram distribution is fit on the specific set's tokens and
its cross-entropy is measured on the held-out set's tokens, in nats, as the trainer measures
`lm loss validation/specific` (which predicts every token but the first of each sequence; the
difference is negligible). A language model that ends near this number has learnt little
beyond token frequencies, and a better mixture there mostly matches frequencies.
"""

from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np


def unigram_cross_entropy(train_tokens: np.ndarray, heldout_tokens: np.ndarray, vocab_size: int) -> float:
    counts = np.bincount(train_tokens, minlength=vocab_size).astype(np.float64) + 1.0
    log_p = np.log(counts / counts.sum())
    return float(-log_p[heldout_tokens].mean())


def _all_tokens(prefix: str) -> np.ndarray:
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(prefix, mmap=True)
    return np.concatenate([dataset.get(i) for i in range(len(dataset))]).astype(np.int64)


def unigram_baseline(prepared_path: str) -> Optional[float]:
    """The baseline of a prepared.json's specific and held-out sets; None without them."""
    if not prepared_path or not os.path.exists(prepared_path):
        return None
    with open(prepared_path) as f:
        prepared = json.load(f)
    if not all(k in prepared for k in ("specific", "heldout", "domains_manifest")):
        return None
    with open(prepared["domains_manifest"]) as f:
        vocab_size = json.load(f)["tokenizer"]["vocab_size"] or 0
    train, heldout = _all_tokens(prepared["specific"]), _all_tokens(prepared["heldout"])
    vocab_size = max(vocab_size, int(train.max()) + 1, int(heldout.max()) + 1)
    return unigram_cross_entropy(train, heldout, vocab_size)
