"""Throughput of tools/preprocess_data.py with 1 and 2 workers (or any list of counts).

    python bench/preprocess.py docs.jsonl                      # the file as it is
    python bench/preprocess.py a.jsonl.xz b.jsonl --megabytes 16  # 16 MB of their documents

Each worker count runs the tool as users do (a subprocess, --append-eod), `--repeats` times;
the best run is reported. tokens/s is the tool's own measure (reading, tokenizing, writing,
starting the worker pool), excluding interpreter start-up and imports, which the wall
column includes. The outputs of all worker counts are checked to be byte-identical.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import List, Tuple

from megatron_dga.data.jsonl import iter_documents

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "preprocess_data.py")


def build_input(sources: List[str], megabytes: float, path: str) -> Tuple[int, int]:
    """Write documents of `sources`, repeated if needed, until `megabytes` MB; (docs, bytes)."""
    limit, written, docs = int(megabytes * 1e6), 0, 0
    with open(path, "w", encoding="utf-8") as out:
        while written < limit:
            before = written
            for source in sources:
                for _, text in iter_documents(source, skip_bad=True):
                    line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                    out.write(line)
                    written += len(line.encode())
                    docs += 1
                    if written >= limit:
                        return docs, written
            if written == before:
                raise SystemExit(f"no usable documents in {', '.join(sources)}")
    return docs, written


def run_tool(
    input_path: str, prefix: str, workers: int, tokenizer_args: List[str]
) -> Tuple[int, float, float]:
    """(tokens, seconds the tool measured, wall seconds of the whole command)."""
    cmd = [
        sys.executable,
        TOOL,
        "--input",
        input_path,
        "--output-prefix",
        prefix,
        "--append-eod",
        "--workers",
        str(workers),
        "--no-progress",
        *tokenizer_args,
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    # "wrote P.bin/.idx: D documents, T tokens (dtype) in S s, R tokens/s"; R is the precise one
    tokens = int(re.search(r"(\d+) tokens \(", done.stdout).group(1))
    rate = float(re.search(r"([\d,]+) tokens/s", done.stdout).group(1).replace(",", ""))
    return tokens, tokens / rate, wall


def digest(prefix: str) -> str:
    h = hashlib.sha256()
    for ext in (".bin", ".idx"):
        with open(prefix + ext, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="+", help="JSONL file(s) with a 'text' key (.gz/.xz also read)")
    parser.add_argument(
        "--megabytes", type=float, help="build an input of this size from the files' documents"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare")
    parser.add_argument("--repeats", type=int, default=3, help="runs per worker count; the best is reported")
    parser.add_argument("--tokenizer-type", default="GPT2BPETokenizer")
    parser.add_argument("--tokenizer-model")
    args = parser.parse_args(argv)
    tokenizer_args = ["--tokenizer-type", args.tokenizer_type]
    if args.tokenizer_model:
        tokenizer_args += ["--tokenizer-model", args.tokenizer_model]

    with tempfile.TemporaryDirectory(prefix="bench-preprocess-") as tmp:
        single_plain = len(args.input) == 1 and args.input[0].endswith(".jsonl")
        if args.megabytes is None and single_plain:
            input_path = args.input[0]
            described = input_path
        else:
            input_path = os.path.join(tmp, "input.jsonl")
            megabytes = args.megabytes if args.megabytes is not None else float("inf")
            docs, size = build_input(args.input, megabytes, input_path)
            described = f"{docs} documents from {', '.join(args.input)}"
        size_mb = os.path.getsize(input_path) / 1e6
        print(
            f"input: {described} ({size_mb:.1f} MB), {args.tokenizer_type}, best of {args.repeats}, "
            f"{os.cpu_count()} CPUs"
        )

        rows, digests = [], set()
        for workers in args.workers:
            prefix = os.path.join(tmp, f"w{workers}")
            runs = [run_tool(input_path, prefix, workers, tokenizer_args) for _ in range(args.repeats)]
            tokens, seconds, _ = min(runs, key=lambda r: r[1])
            wall = min(r[2] for r in runs)
            rows.append((workers, tokens, seconds, wall))
            digests.add(digest(prefix + "_text_document"))

        print(f"{'workers':>7} {'tokens':>12} {'seconds':>8} {'tokens/s':>12} {'MB/s':>7} {'wall s':>7}")
        for workers, tokens, seconds, wall in rows:
            print(
                f"{workers:>7} {tokens:>12,} {seconds:>8.2f} {tokens / seconds:>12,.0f} "
                f"{size_mb / seconds:>7.1f} {wall:>7.2f}"
            )
        base = rows[0]
        for workers, tokens, seconds, _ in rows[1:]:
            print(f"ratio {workers} vs {base[0]} workers: {base[2] / seconds:.2f}x tokens/s")
        print(f"outputs identical across worker counts: {'yes' if len(digests) == 1 else 'NO'}")
    return 0 if len(digests) == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
