"""Checks that turn broken data files into clear errors before training reads them.

A truncated `.bin`, or an `.idx` written for another `.bin`, would otherwise surface as a
numpy error deep inside a batch read, and a token id beyond the model's vocabulary as an index
error in the embedding (a device-side assert on GPU). A dataset tokenized with another
tokenizer than its manifest says trains silently on the wrong ids.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from megatron.core.datasets.indexed_dataset import IndexedDataset

from megatron_dga.data.errors import DataError


def check_bin_matches_idx(dataset: IndexedDataset, prefix: str) -> None:
    """The .bin holds exactly the bytes its .idx describes."""
    index = dataset.index
    expected = 0
    if index.sequence_count:
        expected = int(index.sequence_pointers[-1]) + int(index.sequence_lengths[-1]) * index.dtype_size
    actual = os.path.getsize(prefix + ".bin")
    if actual < expected:
        raise DataError(f"{prefix}.bin is truncated: {actual} bytes, but {prefix}.idx describes {expected} "
                        f"({index.sequence_count} documents)")
    if actual > expected:
        raise DataError(f"{prefix}.bin ({actual} bytes) and {prefix}.idx ({expected} bytes described) do not "
                        f"belong together: rebuild the dataset")


def check_tokenizer_stamp(prefix: str, tokenizer: dict, manifest_path: str) -> None:
    """The tokenizer that built `prefix` (its .source.json, written by tools/build_domains.py)
    is the manifest's."""
    stamp_path = prefix + ".source.json"
    if not os.path.exists(stamp_path):
        return  # built by another tool: nothing recorded to compare
    try:
        with open(stamp_path, encoding="utf-8") as f:
            built_with = json.load(f)["source"]["tokenizer"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{stamp_path}: unreadable ({e})") from None
    for key in ("type", "vocab_size", "eod"):
        if built_with.get(key) != tokenizer.get(key):
            raise DataError(
                f"{prefix}: built with tokenizer {built_with.get('type')} (vocabulary {built_with.get('vocab_size')}, "
                f"end of document {built_with.get('eod')}; {stamp_path}), but {manifest_path} says "
                f"{tokenizer.get('type')} (vocabulary {tokenizer.get('vocab_size')}, end of document "
                f"{tokenizer.get('eod')}): rebuild the dataset or the manifest"
            )


def check_token_ids(tokens, vocab_size: Optional[int], where: str) -> None:
    """Every id below the model's vocabulary size."""
    if vocab_size is not None and len(tokens) and int(tokens.max()) >= vocab_size:
        raise DataError(f"{where} holds token id {int(tokens.max())}, not below the model's vocabulary size "
                        f"{vocab_size} (--vocab-size, or the tokenizer's): the data was tokenized for another model")
