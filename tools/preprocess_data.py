"""Tokenize a JSONL file into a Megatron indexed dataset, with Megatron-LM's flags and names.

    python tools/preprocess_data.py --input docs.jsonl --output-prefix data/docs \\
        --tokenizer-type GPT2BPETokenizer --append-eod --workers 2

writes data/docs_text_document.bin and data/docs_text_document.idx, readable by megatron-core's
`IndexedDataset("data/docs_text_document")` and by Megatron-LM. The work is done by
`megatron_dga.data.preprocess`.
"""

from __future__ import annotations

import argparse
import lzma
import sys
from typing import List, Optional

from megatron_dga.data.preprocess import preprocess
from megatron_dga.data.tokenizers import TOKENIZER_TYPES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_argument_group("input")
    group.add_argument("--input", required=True, help="JSONL file, one document per line (.gz/.xz also read)")
    group.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="key of the document text in each JSON object (one key; default: text)",
    )
    group.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip lines with invalid JSON or UTF-8, a missing key or empty text, and print "
        "their counts by reason; without it the first bad line stops the run with file:line",
    )
    group = parser.add_argument_group("tokenizer")
    group.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES, help="tokenizer to use")
    group.add_argument(
        "--tokenizer-model",
        help="HuggingFaceTokenizer: tokenizer.json or a folder holding one; TikTokenizer: ranks file; "
        "SentencePieceTokenizer, GPTSentencePieceTokenizer, Llama2Tokenizer: a sentencepiece model; "
        "GPT2BPETokenizer: not used (the ranks file is packaged, or --vocab-file and --merge-file)",
    )
    group.add_argument("--vocab-file", help="GPT2BPETokenizer: GPT-2's vocab.json (with --merge-file)")
    group.add_argument("--merge-file", help="GPT2BPETokenizer: GPT-2's merges.txt (with --vocab-file)")
    group.add_argument("--vocab-size", type=int, help="NullTokenizer: the number of token ids")
    group.add_argument("--tiktoken-pattern", choices=["v1", "v2"], help="TikTokenizer: Megatron's pattern")
    group.add_argument(
        "--append-eod", action="store_true", help="append the end-of-document id to every document"
    )
    group = parser.add_argument_group("output")
    group.add_argument(
        "--output-prefix",
        required=True,
        help="writes <prefix>_<key>_document.bin/.idx (missing folders are created)",
    )
    group = parser.add_argument_group("runtime")
    group.add_argument(
        "--workers",
        type=int,
        default=1,
        help="tokenizer processes (default: 1); the output does not depend on it",
    )
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.json_keys) != 1:
        parser.error(f"--json-keys: one key per run is supported, got {args.json_keys}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    try:
        result = preprocess(
            args.input,
            args.output_prefix,
            args.tokenizer_type,
            args.tokenizer_model,
            json_key=args.json_keys[0],
            append_eod=args.append_eod,
            workers=args.workers,
            skip_bad_lines=args.skip_bad_lines,
            progress=not args.no_progress,
            tokenizer_options={"vocab_file": args.vocab_file, "merge_file": args.merge_file,
                               "vocab_size": args.vocab_size, "tiktoken_pattern": args.tiktoken_pattern},
        )
    except (OSError, ValueError, EOFError, lzma.LZMAError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {result.prefix}.bin/.idx: {result.documents} documents, {result.tokens} tokens "
        f"({result.dtype}) in {result.seconds:.1f} s, {result.tokens_per_second:,.0f} tokens/s"
    )
    if args.skip_bad_lines:
        print(f"skipped lines: {result.skipped.total} ({result.skipped.summary()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
