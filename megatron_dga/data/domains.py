"""Open the training domains: indexed datasets, train/validation splits, token caps.

Domains come from a domains manifest (`--domains-manifest domains.json`) or from Megatron's
`--data-path [w1] prefix1 [w2 prefix2 ...]`. Each domain's documents are split into train,
validation and test ranges as Megatron does (`--split 969,30,1`: contiguous document ranges).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
from megatron.core.datasets.blended_megatron_dataset_config import (
    convert_split_vector_to_split_matrix,
    parse_and_normalize_split,
)
from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dga.config import DataConfig
from megatron_dga.data.checks import check_bin_matches_idx, check_tokenizer_stamp
from megatron_dga.data.errors import DataError
from megatron_dga.data.manifest import DomainsManifest
from megatron_dga.data.sequences import (
    DomainTooSmallError,
    FewExamples,
    SequenceStream,
    StreamKind,
    cap_documents,
    epoch_key,
    stream_key,
)


@dataclass
class Domain:
    name: str
    prefix: str
    train: SequenceStream
    valid: Optional[SequenceStream]
    total_tokens: int  # all documents, before split and cap

    @property
    def train_tokens(self) -> int:
        return self.train.tokens_per_epoch


@dataclass
class TokenizerSummary:
    vocab_size: Optional[int]
    eod: Optional[int]
    type: Optional[str] = None
    model: Optional[str] = None
    options: Dict = field(default_factory=dict)  # build_tokenizer's keyword arguments

    def build(self):
        """The tokenizer itself (to turn token ids back into text)."""
        from megatron_dga.data.tokenizers import build_tokenizer

        if not self.type:
            raise DataError("the tokenizer of this data is unknown: give --tokenizer-type")
        return build_tokenizer(self.type, self.model, **self.options)


INDEX_HEADER = b"MMIDIDX\x00\x00"  # megatron-core's .idx magic


def open_indexed_dataset(prefix: str, what: str, mmap: bool = True) -> IndexedDataset:
    for suffix in (".bin", ".idx"):
        if not os.path.isfile(prefix + suffix):
            raise DataError(f"{what}: data file not found: {prefix}{suffix}")
    if os.path.getsize(prefix + ".bin") == 0:
        raise DataError(f"{what}: {prefix}.bin is empty: no documents")
    with open(prefix + ".idx", "rb") as f:
        header = f.read(len(INDEX_HEADER))
    if header != INDEX_HEADER:  # megatron-core's reader would fail half-built, noisily
        raise DataError(f"{what}: cannot read indexed dataset {prefix}.idx: not a Megatron index (it does not start "
                        f"with MMIDIDX): rebuild it with tools/preprocess_data.py")
    try:
        dataset = IndexedDataset(prefix, mmap=mmap)
    except Exception as e:  # a corrupt or foreign .idx
        raise DataError(f"{what}: cannot read indexed dataset {prefix}.idx: {e}") from None
    check_bin_matches_idx(dataset, prefix)
    return dataset


def split_document_ranges(split: str, num_docs: int) -> List[Tuple[int, int]]:
    """[train, valid, test] document ranges, with Megatron's rounding."""
    try:
        vector = [float(x) for x in split.strip("'\"").split(",")]
        if not vector or len(vector) > 3 or any(x < 0 for x in vector) or sum(vector) <= 0:
            raise ValueError(split)
        matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(",".join(map(str, vector))))
    except (AssertionError, ValueError, ZeroDivisionError):
        raise DataError(f"--split {split!r}: expected up to three non-negative numbers, e.g. 969,30,1") from None
    ranges = []
    for bookends in matrix:
        if bookends is None:
            ranges.append((0, 0))
        else:
            ranges.append((int(round(bookends[0] * num_docs)), int(round(bookends[1] * num_docs))))
    return ranges


def parse_data_path(data_path: List[str]) -> List[Tuple[Optional[float], str]]:
    """Megatron's `--data-path`: a list of prefixes, or of weight/prefix pairs."""
    def is_number(s):
        try:
            float(s)
            return True
        except ValueError:
            return False

    if not data_path:
        raise DataError("--data-path: no prefixes given")
    if is_number(data_path[0]):  # weights: every other item must be one
        if len(data_path) % 2:
            raise DataError(f"--data-path: {len(data_path)} items; 'w1 prefix1 w2 prefix2 ...' needs pairs: {data_path}")
        for w, p in zip(data_path[0::2], data_path[1::2]):
            if not is_number(w):
                raise DataError(f"--data-path: weight {w!r} (of prefix {p!r}) is not a number")
        pairs = [(float(w), p) for w, p in zip(data_path[0::2], data_path[1::2])]
        for w, p in pairs:
            if not np.isfinite(w) or w < 0:
                raise DataError(f"--data-path: weight {w} of prefix {p!r} must be a finite number >= 0")
        return pairs
    numbers = [p for p in data_path if is_number(p)]
    if numbers:
        raise DataError(f"--data-path: {numbers[0]!r} looks like a weight, but the first item {data_path[0]!r} "
                        f"is not a number: give 'w1 prefix1 w2 prefix2 ...' or prefixes only")
    return [(None, p) for p in data_path]


def domain_name_from_prefix(prefix: str) -> str:
    name = os.path.basename(prefix.rstrip("/"))
    return name[: -len("_text_document")] if name.endswith("_text_document") else name


def tokenizer_of(data: DataConfig, model_vocab_size: Optional[int]) -> TokenizerSummary:
    """The tokenizer the flags name (--tokenizer-type and its files), built to know its sizes."""
    if not data.tokenizer_type:
        return TokenizerSummary(None, None)
    options = {"vocab_file": data.vocab_file, "merge_file": data.merge_file, "vocab_size": model_vocab_size,
               "tiktoken_pattern": data.tiktoken_pattern}
    summary = TokenizerSummary(None, None, data.tokenizer_type, data.tokenizer_model, options)
    tokenizer = summary.build()
    summary.vocab_size, summary.eod = tokenizer.vocab_size, tokenizer.eod
    return summary


def mock_prefix(vocab_size: int, seed: int) -> str:
    """Megatron's --mock-data: a domain of random token ids, written once per process into a
    temporary folder (1M tokens in documents of 1,000; a run reads it epoch after epoch)."""
    import tempfile

    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

    folder = tempfile.mkdtemp(prefix="megatron-dga-mock-")
    prefix = os.path.join(folder, "mock")
    rng = np.random.default_rng(seed)
    dtype = np.uint16 if vocab_size < 65500 else np.int32
    builder = IndexedDatasetBuilder(get_bin_path(prefix), dtype=dtype)
    for _ in range(1000):
        builder.add_document(rng.integers(0, vocab_size, 1000).astype(dtype), [1000])
    builder.finalize(get_idx_path(prefix))
    return prefix


def domain_prefixes(data: DataConfig, model_vocab_size: Optional[int] = None, seed: int = 0
                    ) -> Tuple[List[str], List[str], Optional[List[float]], TokenizerSummary]:
    """Names, prefixes, --data-path weights (if given) and tokenizer of the domains."""
    if data.mock_data:
        summary = tokenizer_of(data, model_vocab_size)
        ids = summary.vocab_size or model_vocab_size
        if not ids:
            raise DataError("--mock-data needs --vocab-size (or a --tokenizer-type) to draw token ids")
        return ["mock"], [mock_prefix(ids if summary.eod is None else summary.eod, seed)], None, summary
    if data.domains_manifest:
        try:
            manifest = DomainsManifest.load(data.domains_manifest)
        except (FileNotFoundError, ValueError) as e:
            raise DataError(f"--domains-manifest: {e}") from None
        tok = manifest.tokenizer
        summary = TokenizerSummary(tok.vocab_size, tok.eod, tok.type, tok.model)
        names = manifest.names
        prefixes = [manifest.resolve_prefix(d) for d in manifest.domains]
        if not names:
            raise DataError(f"--domains-manifest {data.domains_manifest}: no domains")
        for prefix in prefixes:
            check_tokenizer_stamp(prefix, {"type": tok.type, "vocab_size": tok.vocab_size, "eod": tok.eod},
                                  data.domains_manifest)
        return names, prefixes, None, summary

    pairs = parse_data_path(data.data_path)
    names, seen = [], {}
    for _, prefix in pairs:
        name = domain_name_from_prefix(prefix)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    weights = [w for w, _ in pairs] if pairs[0][0] is not None else None
    return names, [p for _, p in pairs], weights, tokenizer_of(data, model_vocab_size)


def cap_seed_key(seed: int, index: int):
    """The seed of domain `index`'s --domain-max-tokens subset."""
    return epoch_key(stream_key(seed, StreamKind.CAP, index), 0)


def open_domain(name: str, prefix: str, data: DataConfig, seq_length: int, seed: int,
                index: int) -> Domain:
    dataset = open_indexed_dataset(prefix, f"domain {name!r}", mmap=data.mmap_bin_files)
    sizes = np.asarray(dataset.sequence_lengths, dtype=np.int32)
    (train_lo, train_hi), (valid_lo, valid_hi), _ = split_document_ranges(data.split, len(sizes))
    train_docs = np.arange(train_lo, train_hi, dtype=np.int32)
    if len(train_docs) == 0:
        raise DataError(f"domain {name!r} ({prefix}): --split {data.split} leaves no training documents")
    train_sizes = sizes
    if data.domain_max_tokens is not None and sizes[train_docs].sum() > data.domain_max_tokens:
        train_docs, train_sizes = cap_documents(train_docs, sizes, data.domain_max_tokens, cap_seed_key(seed, index))
    try:
        train = SequenceStream(name, dataset, train_docs, train_sizes, seq_length,
                               seed_key=stream_key(seed, StreamKind.TRAIN, index))
    except DomainTooSmallError as e:
        raise DataError(f"{e} ({prefix}.bin, training split --split {data.split})") from None
    valid = None
    valid_docs = np.arange(valid_lo, valid_hi, dtype=np.int32)
    if len(valid_docs) and sizes[valid_docs].sum() > seq_length + 1:
        valid = SequenceStream(name, dataset, valid_docs, sizes, seq_length,
                               seed_key=stream_key(seed, StreamKind.VALID, index), shuffle=False)
    return Domain(name, prefix, train, valid, int(sizes.astype(np.int64).sum()))


def open_domains(data: DataConfig, seq_length: int, seed: int, model_vocab_size: Optional[int] = None):
    """All domains, the --data-path weights (or None) and the tokenizer summary."""
    names, prefixes, weights, tokenizer = domain_prefixes(data, model_vocab_size, seed)
    domains = [open_domain(n, p, data, seq_length, seed, i) for i, (n, p) in enumerate(zip(names, prefixes))]
    return domains, weights, tokenizer


def open_specific_sets(data: DataConfig, seq_length: int, seed: int):
    """The specific set's training stream (all its documents, or only
    --specific-train-samples sequences) and its held-out validation stream; None if absent."""
    train = valid = None
    if data.specific_data_path:
        dataset = open_indexed_dataset(data.specific_data_path, "--specific-data-path")
        sizes = np.asarray(dataset.sequence_lengths, dtype=np.int32)
        docs = np.arange(len(sizes), dtype=np.int32)
        try:
            train = SequenceStream("specific", dataset, docs, sizes, seq_length,
                                   seed_key=stream_key(seed, StreamKind.SPECIFIC, 0))
        except DomainTooSmallError as e:
            raise DataError(f"--specific-data-path {data.specific_data_path}: {e}") from None
        if data.specific_train_samples:
            train = FewExamples(train, data.specific_train_samples,
                                stream_key(seed, StreamKind.SPECIFIC_EXAMPLES, 0))
    if data.specific_valid_data_path:
        dataset = open_indexed_dataset(data.specific_valid_data_path, "--specific-valid-data-path")
        sizes = np.asarray(dataset.sequence_lengths, dtype=np.int32)
        try:
            valid = SequenceStream("specific", dataset, np.arange(len(sizes), dtype=np.int32), sizes, seq_length,
                                   seed_key=stream_key(seed, StreamKind.VALID, 0), shuffle=False)
        except DomainTooSmallError as e:
            raise DataError(f"--specific-valid-data-path {data.specific_valid_data_path}: {e}") from None
    return train, valid
