"""Train a byte-level BPE tokenizer (HF `tokenizers`) on JSONL documents.

    python tools/train_tokenizer.py --input a.jsonl b.jsonl.xz --vocab-size 8192 --output tok/

writes tok/tokenizer.json (or the .json file named by --output), with `<|endoftext|>` as its
only special token (id 0), for `--tokenizer-type HuggingFaceTokenizer --tokenizer-model tok/`.
The same input and settings give a byte-identical file.
"""

from __future__ import annotations

import argparse
import lzma
import os
import sys
from typing import Iterator, List, Optional, Sequence

from megatron_dga.data.jsonl import SkipCounter, iter_documents
from megatron_dga.data.tokenizers import ENDOFTEXT


def output_file(output: str) -> str:
    """--output names a .json file, or a folder that receives tokenizer.json."""
    return output if output.endswith(".json") else os.path.join(output, "tokenizer.json")


def iter_texts(
    paths: Sequence[str], json_key: str, skip_bad_lines: bool, skipped: SkipCounter
) -> Iterator[str]:
    for path in paths:
        for _, text in iter_documents(path, json_key, skip_bad_lines, skipped):
            yield text


def train_bpe(
    inputs: Sequence[str],
    output: str,
    vocab_size: int,
    json_key: str = "text",
    min_frequency: int = 2,
    skip_bad_lines: bool = False,
    progress: bool = True,
) -> str:
    """Train, save atomically, and return the tokenizer.json path written."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    for path in inputs:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--input {path}: file not found")
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    # 256 byte symbols + the special token: anything smaller cannot encode every input
    if vocab_size < len(alphabet) + 1:
        raise ValueError(f"--vocab-size must be at least {len(alphabet) + 1}, got {vocab_size}")

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[ENDOFTEXT],
        initial_alphabet=alphabet,  # every byte is a token, so nothing is ever unknown
        show_progress=progress,
    )
    skipped = SkipCounter()
    tokenizer.train_from_iterator(iter_texts(inputs, json_key, skip_bad_lines, skipped), trainer=trainer)
    if skipped.total:
        print(f"skipped lines: {skipped.total} ({skipped.summary()})")

    path = output_file(output)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        tokenizer.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input", nargs="+", required=True, help="JSONL file(s), one document per line (.gz/.xz also read)"
    )
    parser.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="key of the document text (one key; default: text)",
    )
    parser.add_argument(
        "--vocab-size", type=int, required=True, help="vocabulary size, special token included"
    )
    parser.add_argument(
        "--min-frequency", type=int, default=2, help="least count of a pair to be merged (default: 2)"
    )
    parser.add_argument(
        "--output", required=True, help="tokenizer .json file to write, or a folder for tokenizer.json"
    )
    parser.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip unusable lines (counted by reason) instead of stopping at the first one",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.json_keys) != 1:
        parser.error(f"--json-keys: one key is supported, got {args.json_keys}")
    try:
        path = train_bpe(
            args.input,
            args.output,
            args.vocab_size,
            json_key=args.json_keys[0],
            min_frequency=args.min_frequency,
            skip_bad_lines=args.skip_bad_lines,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, EOFError, lzma.LZMAError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
