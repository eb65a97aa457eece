"""GPT training sequences of one domain, epoch after epoch.

A domain's documents are concatenated and cut into sequences of `seq_length + 1` tokens
(inputs plus the shifted labels), with megatron-core's `build_sample_idx`, as Megatron's
GPTDataset does. Each epoch concatenates the documents in a new seeded order and visits its
sequences in a new seeded order, so a domain that runs out simply starts its next epoch:
the k-th draw from a domain is a pure function of (seed, domain, k).
"""

from __future__ import annotations

from collections import OrderedDict
from enum import IntEnum
from typing import Optional, Tuple

import numpy as np
from megatron.core.datasets.helpers import build_sample_idx
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dga.data.checks import check_token_ids


class DomainTooSmallError(ValueError):
    pass


class StreamKind(IntEnum):
    """What a random stream is for; part of every stream's seed key."""

    TRAIN = 1  # a domain's training sequences
    # 2 was a separate stream of each domain's sequences for DGA's probes, which now read ahead in
    # the training streams; the other values keep their keys.
    CAP = 3  # the subset of a domain's documents kept by --domain-max-tokens
    SPECIFIC = 4  # the specific set's sequences
    SPECIFIC_EXAMPLES = 5  # the order of the --specific-train-samples examples, pass after pass
    VALID = 6  # validation sequences (read in order: this key draws nothing)


def stream_key(seed: int, kind: StreamKind, index: int) -> Tuple[int, int, int]:
    """The key of one stream: (run seed, kind, domain index)."""
    return int(seed), int(kind), int(index)


def epoch_key(key: Tuple[int, ...], epoch: int) -> Tuple[int, ...]:
    """The seed of one epoch of a stream. Every such seed has four numbers: NumPy's
    SeedSequence ignores trailing zeros, so seeds of different lengths could coincide
    ((s, i, 1, 0) is (s, i, 1)); seeds of one length coincide only if equal."""
    assert len(key) == 3, key
    return (*key, int(epoch))


def cap_documents(doc_ids: np.ndarray, sizes: np.ndarray, max_tokens: int,
                  seed_key: Tuple[int, ...]) -> Tuple[np.ndarray, np.ndarray]:
    """A seeded subset of documents holding exactly `max_tokens` tokens (the last one cut
    short). Returns the kept document ids (in their original order) and a copy of `sizes`
    where the cut document has its shortened length."""
    order = np.random.default_rng(list(seed_key)).permutation(doc_ids)
    cumulative = np.cumsum(sizes[order].astype(np.int64))
    n_keep = int(np.searchsorted(cumulative, max_tokens, side="left")) + 1
    n_keep = min(n_keep, len(order))
    kept = order[:n_keep]
    capped_sizes = sizes.copy()
    overflow = int(cumulative[n_keep - 1]) - max_tokens
    if overflow > 0:
        capped_sizes[kept[-1]] -= overflow
    return np.sort(kept), capped_sizes


class SequenceStream:
    """The endless, seeded stream of one domain's training sequences.

    `sample(k)` returns the k-th draw (`seq_length + 1` token ids); `epochs(k)` how many
    epochs k draws amount to. Epoch indices are built lazily and the last two are cached.
    """

    def __init__(self, name: str, dataset: IndexedDataset, doc_ids: np.ndarray, sizes: np.ndarray,
                 seq_length: int, seed_key: Tuple[int, int, int], shuffle: bool = True):
        self.name = name
        self.dataset = dataset
        self.doc_ids = np.asarray(doc_ids, dtype=np.int32)
        self.sizes = np.asarray(sizes, dtype=np.int32)
        self.seq_length = seq_length
        self.seed_key = tuple(int(k) for k in seed_key)  # stream_key(run seed, kind, domain index)
        self.shuffle = shuffle
        self.tokens_per_epoch = int(self.sizes[self.doc_ids].astype(np.int64).sum())
        # Each sequence takes seq_length new tokens and reads one more (the last label).
        self.samples_per_epoch = max(0, (self.tokens_per_epoch - 1) // seq_length)
        if self.samples_per_epoch == 0:
            raise DomainTooSmallError(
                f"domain {name!r} has {self.tokens_per_epoch} tokens in {len(self.doc_ids)} "
                f"documents, fewer than one sequence of {seq_length + 1} tokens"
            )
        self._epochs: "OrderedDict[int, Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]" = OrderedDict()
        self.vocab_size: Optional[int] = None  # set by the trainer: every token id read is checked against it

    def _epoch_index(self, epoch: int):
        if epoch not in self._epochs:
            rng = np.random.default_rng(list(self.epoch_key(epoch))) if self.shuffle else None
            doc_order = rng.permutation(self.doc_ids) if self.shuffle else self.doc_ids
            sample_idx = build_sample_idx(
                self.sizes, doc_order, self.seq_length, 1, self.tokens_per_epoch, True, True
            )
            order = rng.permutation(self.samples_per_epoch) if self.shuffle else None
            self._epochs[epoch] = (doc_order, sample_idx, order)
            while len(self._epochs) > 2:
                self._epochs.popitem(last=False)
        return self._epochs[epoch]

    def epoch_key(self, epoch: int) -> Tuple[int, ...]:
        return epoch_key(self.seed_key, epoch)

    def epochs(self, draws: int) -> float:
        return draws / self.samples_per_epoch

    def sample(self, draw: int) -> np.ndarray:
        epoch, within = divmod(int(draw), self.samples_per_epoch)
        doc_order, sample_idx, order = self._epoch_index(epoch)
        s = int(order[within]) if order is not None else within
        (first_doc, first_offset), (last_doc, last_offset) = sample_idx[s], sample_idx[s + 1]
        parts = []
        for position in range(int(first_doc), int(last_doc) + 1):
            doc = int(doc_order[position])
            start = int(first_offset) if position == first_doc else 0
            # The last document contributes up to and including last_offset.
            stop = int(last_offset) + 1 if position == last_doc else int(self.sizes[doc])
            part = self.dataset.get(doc, offset=start, length=stop - start)
            check_token_ids(part, self.vocab_size, f"domain {self.name!r} ({self.dataset.path_prefix}.bin), document {doc}")
            parts.append(part)
        tokens = np.concatenate(parts) if len(parts) > 1 else parts[0]
        assert len(tokens) == self.seq_length + 1, (self.name, draw, len(tokens))
        return tokens.astype(np.int64)


class FewExamples:
    """The first `n` sequences of a stream, revisited pass after pass in a new seeded order:
    the few-examples regime (`--specific-train-samples`)."""

    def __init__(self, stream: SequenceStream, n: int, seed_key):
        if n > stream.samples_per_epoch:
            raise ValueError(
                f"--specific-train-samples {n}: the specific set has only {stream.samples_per_epoch} sequences"
            )
        self.stream, self.n, self.seed_key = stream, n, tuple(seed_key)
        self.samples_per_epoch = n
        self._order = {}

    def epoch_key(self, epoch: int) -> Tuple[int, ...]:
        return epoch_key(self.seed_key, epoch)

    def examples(self):
        """The n sequences, in their first pass's order."""
        return [self.sample(i) for i in range(self.n)]

    def sample(self, draw: int) -> np.ndarray:
        epoch, within = divmod(int(draw), self.n)
        if epoch not in self._order:
            self._order = {epoch: np.random.default_rng(list(self.epoch_key(epoch))).permutation(self.n)}
        return self.stream.sample(int(self._order[epoch][within]))
