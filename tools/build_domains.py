"""Tokenize a folder of per-domain JSONL files into indexed datasets and a domains manifest.

    python tools/build_domains.py --input-dir corpus/ --output-dir data/ \\
        --tokenizer-type GPT2BPETokenizer --workers 2

reads corpus/<domain>.jsonl (or .jsonl.gz / .jsonl.xz), writes data/<domain>_text_document.bin/.idx
for each domain and data/domains.json (`megatron_dga.data.manifest`), which training reads.

Each dataset gets a `<domain>_text_document.source.json` beside it recording what it was built
from (input path, size and modification time; tokenizer and its file's sha256; settings) and
its counts. A later run with the same inputs and settings reuses it instead of tokenizing again.
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import sys
from typing import Dict, List, Optional, Sequence

from megatron_dga.files import sha256_of_file, write_json
from megatron_dga.data.manifest import DomainEntry, DomainsManifest
from megatron_dga.data.preprocess import dataset_prefix, preprocess
from megatron_dga.data.tokenizers import TOKENIZER_TYPES, Tokenizer, build_tokenizer

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.xz")
MANIFEST_NAME = "domains.json"


def find_domain_inputs(input_dir: str) -> Dict[str, str]:
    """Domain name -> input file, for every <domain>.jsonl[.gz|.xz] in input_dir."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"--input-dir {input_dir}: folder not found")
    inputs: Dict[str, str] = {}
    for entry in sorted(os.listdir(input_dir)):
        suffix = next((s for s in INPUT_SUFFIXES if entry.endswith(s)), None)
        if suffix is None or entry == suffix:
            continue
        name = entry[: -len(suffix)]
        if name in inputs:
            first = os.path.basename(inputs[name])
            raise ValueError(f"--input-dir {input_dir}: domain {name!r} has two inputs, {first} and {entry}")
        inputs[name] = os.path.join(input_dir, entry)
    if not inputs:
        raise ValueError(f"--input-dir {input_dir}: no <domain>{'|'.join(INPUT_SUFFIXES)} files")
    return inputs


def select_domains(inputs: Dict[str, str], wanted: Optional[Sequence[str]]) -> List[str]:
    if not wanted:
        return sorted(inputs)
    missing = [name for name in wanted if name not in inputs]
    if missing:
        raise ValueError(f"--domains: no input for {', '.join(missing)}; found {', '.join(sorted(inputs))}")
    return list(dict.fromkeys(wanted))


def source_record(input_path: str, tokenizer: Tokenizer, json_key: str, append_eod: bool) -> dict:
    """Everything the dataset bytes depend on; equal records mean the dataset can be reused."""
    stat = os.stat(input_path)
    return {
        "input": os.path.abspath(input_path),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "tokenizer": vars(tokenizer.info()),
        "tokenizer_sha256": sha256_of_file(tokenizer.model_file) if tokenizer.model_file else None,
        "json_key": json_key,
        "append_eod": append_eod,
    }


def _file_sizes(prefix: str) -> Optional[List[int]]:
    try:
        return [os.path.getsize(prefix + ".bin"), os.path.getsize(prefix + ".idx")]
    except OSError:
        return None


def reusable_counts(stamp_path: str, prefix: str, source: dict) -> Optional[dict]:
    """The recorded counts if the dataset at prefix was built from exactly `source`."""
    try:
        with open(stamp_path, encoding="utf-8") as f:
            stamp = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(stamp, dict) or stamp.get("source") != source:
        return None
    if stamp.get("file_sizes") != _file_sizes(prefix):
        return None  # replaced or damaged since
    counts = stamp.get("counts")
    return counts if isinstance(counts, dict) and set(counts) == {"documents", "tokens"} else None


def describe(counts: dict) -> str:
    return f"{counts['documents']} documents, {counts['tokens']} tokens"


def write_stamp(stamp_path: str, prefix: str, source: dict, counts: dict) -> None:
    write_json(stamp_path, {"source": source, "counts": counts, "file_sizes": _file_sizes(prefix)})


def build_domains(
    input_dir: str,
    output_dir: str,
    tokenizer_type: str,
    tokenizer_model: Optional[str] = None,
    domains: Optional[Sequence[str]] = None,
    workers: int = 1,
    append_eod: bool = True,
    json_key: str = "text",
    skip_bad_lines: bool = False,
    progress: bool = True,
) -> DomainsManifest:
    """Build (or reuse) every selected domain's dataset and write output_dir/domains.json."""
    inputs = find_domain_inputs(input_dir)
    names = select_domains(inputs, domains)
    tokenizer = build_tokenizer(tokenizer_type, tokenizer_model)
    os.makedirs(output_dir, exist_ok=True)

    entries = []
    for name in names:
        prefix = dataset_prefix(os.path.join(output_dir, name), json_key)
        stamp_path = prefix + ".source.json"
        source = source_record(inputs[name], tokenizer, json_key, append_eod)
        counts = reusable_counts(stamp_path, prefix, source)
        if counts is not None:
            print(f"{name}: unchanged, reusing {os.path.basename(prefix)} ({describe(counts)})")
        else:
            # a stale record must not outlive the dataset it describes
            if os.path.exists(stamp_path):
                os.remove(stamp_path)
            result = preprocess(
                inputs[name],
                os.path.join(output_dir, name),
                tokenizer_type,
                tokenizer_model,
                json_key=json_key,
                append_eod=append_eod,
                workers=workers,
                skip_bad_lines=skip_bad_lines,
                progress=progress,
                tokenizer=tokenizer,
            )
            counts = {"documents": result.documents, "tokens": result.tokens}
            write_stamp(stamp_path, prefix, source, counts)
            skipped = result.skipped
            note = f", skipped {skipped.total} lines ({skipped.summary()})" if skipped.total else ""
            print(f"{name}: built {os.path.basename(prefix)} ({describe(counts)}{note})")
        entries.append(DomainEntry(name=name, prefix=os.path.relpath(prefix, output_dir), **counts))

    manifest = DomainsManifest(tokenizer=tokenizer.info(), domains=entries)
    manifest.save(os.path.join(output_dir, MANIFEST_NAME))
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--input-dir", required=True, help="folder of <domain>.jsonl files (.jsonl.gz/.jsonl.xz also read)"
    )
    parser.add_argument(
        "--output-dir", required=True, help="receives <domain>_text_document.bin/.idx and domains.json"
    )
    parser.add_argument("--tokenizer-type", required=True, choices=TOKENIZER_TYPES, help="tokenizer to use")
    parser.add_argument(
        "--tokenizer-model",
        help="HuggingFaceTokenizer: tokenizer.json or a folder holding one; TikTokenizer: ranks file; "
        "GPT2BPETokenizer: not used",
    )
    parser.add_argument("--domains", help="comma-separated domain names to build (default: every input)")
    parser.add_argument(
        "--json-keys",
        nargs="+",
        default=["text"],
        metavar="KEY",
        help="key of the document text (one key; default: text)",
    )
    parser.add_argument(
        "--append-eod",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="append the end-of-document id to every document (default: on)",
    )
    parser.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="skip unusable lines (counted by reason) instead of stopping",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="tokenizer processes per domain (default: 1); the output does not depend on it",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if len(args.json_keys) != 1:
        parser.error(f"--json-keys: one key is supported, got {args.json_keys}")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    domains = [d.strip() for d in args.domains.split(",") if d.strip()] if args.domains else None
    try:
        manifest = build_domains(
            args.input_dir,
            args.output_dir,
            args.tokenizer_type,
            args.tokenizer_model,
            domains=domains,
            workers=args.workers,
            append_eod=args.append_eod,
            json_key=args.json_keys[0],
            skip_bad_lines=args.skip_bad_lines,
            progress=not args.no_progress,
        )
    except (OSError, ValueError, EOFError, lzma.LZMAError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    total = sum(d.tokens for d in manifest.domains)
    print(f"wrote {manifest.path}: {len(manifest.domains)} domains, {total} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
