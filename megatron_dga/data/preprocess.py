"""JSONL documents -> a Megatron indexed dataset (`<prefix>_<key>_document.bin/.idx`).

The logic behind `tools/preprocess_data.py` and `tools/build_domains.py`. As in Megatron-LM,
each JSON line is one document, tokenized into one sequence, optionally followed by the
end-of-document id, and written with megatron-core's `IndexedDatasetBuilder` in the dtype that
`DType.optimal_dtype(vocab_size)` picks (uint16 below 65500 tokens, else int32).

Guarantees:
- The output bytes do not depend on the number of workers: the main process reads and
  parses the lines (so a bad line is reported at its place, by `jsonl.iter_documents`),
  workers only tokenize batches of texts, and the batches are written back in input order.
- Nothing half-written ever carries the final names: both files are written under temporary
  names beside the output, and renamed over the final names only once complete (see
  `publish_dataset`); on any failure the temporary files are removed and a previous dataset
  under the same prefix is left as it was.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import time
import warnings
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator, List, Optional, Tuple

import numpy as np

from megatron_dga.data.jsonl import SkipCounter, iter_documents
from megatron_dga.data.tokenizers import Tokenizer, build_tokenizer

# A batch is what one worker task tokenizes: large enough that inter-process overhead is
# small next to tokenizing, small enough to keep every worker busy and memory bounded.
BATCH_CHARS = 1 << 18
BATCH_DOCS = 1024


def dataset_prefix(output_prefix: str, json_key: str = "text") -> str:
    """Megatron-LM's output name: `--output-prefix P` with key `text` gives `P_text_document`."""
    return f"{output_prefix}_{json_key}_document"


@dataclass
class PreprocessResult:
    prefix: str  # of the .bin/.idx pair written
    documents: int
    tokens: int
    dtype: str
    seconds: float
    skipped: SkipCounter = field(default_factory=SkipCounter)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class DocumentEncoder:
    """Tokenizes batches of documents into one flat token array plus per-document lengths."""

    def __init__(self, tokenizer: Tokenizer, append_eod: bool, dtype: type):
        self.tokenizer, self.append_eod, self.dtype = tokenizer, append_eod, dtype

    def encode_batch(self, texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
        docs = []
        for text in texts:
            ids = self.tokenizer.tokenize(text)
            # as Megatron: no eod after a document that tokenizes to nothing
            if ids and self.append_eod:
                ids.append(self.tokenizer.eod)
            docs.append(ids)
        lengths = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
        tokens = np.fromiter(itertools.chain.from_iterable(docs), dtype=self.dtype, count=int(lengths.sum()))
        return tokens, lengths


# The encoder of a worker process, handed over by the pool's initializer.
_worker_encoder: Optional[DocumentEncoder] = None


def _init_worker(encoder: DocumentEncoder) -> None:
    global _worker_encoder
    _worker_encoder = encoder


def _encode_in_worker(texts: List[str]) -> Tuple[np.ndarray, np.ndarray]:
    return _worker_encoder.encode_batch(texts)


def iter_text_batches(texts: Iterable[str]) -> Iterator[List[str]]:
    batch, chars = [], 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if chars >= BATCH_CHARS or len(batch) >= BATCH_DOCS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def encode_in_order(
    batches: Iterable[List[str]], encoder: DocumentEncoder, workers: int
) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """(tokens, lengths) of every batch, in input order; with workers > 1 a process pool tokenizes.

    The batches are read here, in the calling thread, so an error in the input surfaces
    here too. A window of 2 batches per worker keeps every worker busy and memory bounded.
    """
    if workers <= 1:
        for batch in batches:
            yield encoder.encode_batch(batch)
        return
    # fork: workers inherit the loaded tokenizer (nothing to pickle or load again, ~0.1 s
    # to start) and, unlike spawn, do not re-run the caller's __main__ module. An executor
    # rather than multiprocessing.Pool: a worker that dies (killed, out of memory) fails
    # the run with BrokenProcessPool instead of leaving it waiting forever.
    executor = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(encoder,)
    )
    try:
        pending = deque()
        for batch in batches:
            pending.append(executor.submit(_encode_in_worker, batch))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def _indexed_dataset_module():
    # Imported on first use: megatron.core pulls in torch (seconds) and warns that
    # Transformer Engine and Apex are absent, which is irrelevant to writing files.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def dataset_dtype(vocab_size: int) -> type:
    """Megatron-LM's choice: uint16 when every id fits below 65500, else int32."""
    return _indexed_dataset_module().DType.optimal_dtype(vocab_size)


def publish_dataset(tmp_bin: str, tmp_idx: str, prefix: str) -> None:
    """Rename a finished pair over `prefix.bin/.idx`.

    Two renames cannot be one atomic step, so the old .idx goes first: while the new .bin
    replaces the old one, there is no .idx at all, and a reader never finds a .idx beside a
    .bin it does not describe.
    """
    if os.path.exists(prefix + ".idx"):
        os.remove(prefix + ".idx")
    os.replace(tmp_bin, prefix + ".bin")
    os.replace(tmp_idx, prefix + ".idx")


def _remove_quietly(*paths: str) -> None:
    for path in paths:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def preprocess(
    input_path: str,
    output_prefix: str,
    tokenizer_type: str,
    tokenizer_model: Optional[str] = None,
    json_key: str = "text",
    append_eod: bool = False,
    workers: int = 1,
    skip_bad_lines: bool = False,
    progress: bool = True,
    tokenizer: Optional[Tokenizer] = None,
    tokenizer_options: Optional[dict] = None,
) -> PreprocessResult:
    """Tokenize one JSONL file (optionally .gz/.xz) into `<output_prefix>_<json_key>_document`.

    `tokenizer`, when given, must be the one `build_tokenizer(tokenizer_type,
    tokenizer_model)` returns (it saves building it twice); worker processes inherit it.
    `tokenizer_options`: build_tokenizer's keyword arguments (--vocab-file, --merge-file, ...).
    """
    if not os.path.isfile(input_path):
        raise FileNotFoundError(f"--input {input_path}: file not found")
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    if tokenizer is None:
        tokenizer = build_tokenizer(tokenizer_type, tokenizer_model, **(tokenizer_options or {}))
    indexed_dataset = _indexed_dataset_module()
    dtype = dataset_dtype(tokenizer.vocab_size)
    encoder = DocumentEncoder(tokenizer, append_eod, dtype)

    prefix = dataset_prefix(output_prefix, json_key)
    out_dir = os.path.dirname(os.path.abspath(prefix))
    os.makedirs(out_dir, exist_ok=True)
    # Temporary names share the prefix, so a stray one is easy to spot and remove.
    tmp_bin, tmp_idx = f"{prefix}.bin.tmp-{os.getpid()}", f"{prefix}.idx.tmp-{os.getpid()}"

    skipped = SkipCounter()
    texts = (text for _, text in iter_documents(input_path, json_key, skip_bad_lines, skipped))
    start = time.perf_counter()
    progress_bar = ProgressBar(os.path.basename(input_path), enabled=progress)
    builder = None
    try:
        builder = indexed_dataset.IndexedDatasetBuilder(tmp_bin, dtype=dtype)
        # closing: stop the workers at once if writing fails, not when the generator is collected
        with contextlib.closing(encode_in_order(iter_text_batches(texts), encoder, workers)) as batches:
            documents, tokens = write_documents(builder, batches, progress_bar)
        if tokens == 0:
            # megatron-core cannot open a dataset with an empty .bin: refuse to write one
            raise ValueError(f"{input_path}: no documents to write (bad lines skipped: {skipped.total})")
        builder.finalize(tmp_idx)
        publish_dataset(tmp_bin, tmp_idx, prefix)
    except BaseException:
        # also on KeyboardInterrupt: leave no partial files behind
        if builder is not None:
            builder.data_file.close()
        _remove_quietly(tmp_bin, tmp_idx)
        raise
    finally:
        progress_bar.close()
    return PreprocessResult(
        prefix=prefix,
        documents=documents,
        tokens=tokens,
        dtype=np.dtype(dtype).name,
        seconds=time.perf_counter() - start,
        skipped=skipped,
    )


def write_documents(builder, batches, progress_bar: "ProgressBar") -> Tuple[int, int]:
    """Add every encoded document to the builder, in order; (documents, tokens)."""
    documents = tokens = 0
    for batch_tokens, lengths in batches:
        offset = 0
        for length in lengths.tolist():
            # one sequence per document, as Megatron without --split-sentences
            builder.add_document(batch_tokens[offset : offset + length], [length] if length else [])
            offset += length
        documents += len(lengths)
        tokens += offset
        progress_bar.update(len(lengths), tokens)
    return documents, tokens


class ProgressBar:
    """A tqdm bar of documents with tokens/s.

    Opened at the first update, once the worker pool has forked, so that no worker
    inherits tqdm's monitor thread.
    """

    def __init__(self, description: str, enabled: bool = True):
        self.description, self.enabled = description, enabled
        self.start = time.perf_counter()
        self.bar = None

    def update(self, documents: int, total_tokens: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.description, unit=" docs", unit_scale=True, dynamic_ncols=True)
        self.bar.update(documents)
        rate = total_tokens / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate:,.0f} tokens/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
