"""Reading JSON-lines documents with errors that name the file and the line.

Every tool that reads text (preprocessing, clustering, tokenizer training) goes through
`iter_documents`, so a bad line is reported the same way everywhere: by default the first
bad line stops the run with `path:line: what is wrong`; with `skip_bad=True` bad lines are
counted in a `SkipCounter` instead, by reason. Files ending in `.gz` or `.xz` are
decompressed on the fly.
"""

from __future__ import annotations

import gzip
import json
import lzma
from collections import Counter
from dataclasses import dataclass, field
from typing import BinaryIO, Iterator, Optional, Tuple


class BadDocumentError(ValueError):
    """A JSONL line that cannot be used, with its location."""

    def __init__(self, path: str, line_no: int, reason: str):
        super().__init__(f"{path}:{line_no}: {reason}")
        self.path, self.line_no, self.reason = path, line_no, reason


@dataclass
class SkipCounter:
    """Bad lines skipped, by reason (`invalid JSON`, `missing key`, ...)."""

    by_reason: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_reason.values())

    def summary(self) -> str:
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.by_reason.items())) or "none"


def parse_line(raw: bytes, key: str) -> Tuple[Optional[str], Optional[str]]:
    """(text, None) for a good line, (None, reason) for a bad one. Blank lines are (None, None)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 (byte offset {e.start} in the line)"
    if not line.strip():
        return None, None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(obj, dict):
        return None, f"invalid JSON (expected an object, got {type(obj).__name__})"
    if key not in obj:
        return None, f"missing key {key!r}"
    text = obj[key]
    if not isinstance(text, str):
        return None, f"key {key!r} is not a string"
    if not text.strip():
        return None, f"empty text under key {key!r}"
    return text, None


def open_binary(path: str) -> BinaryIO:
    """Open a JSONL file for reading bytes, decompressing `.gz` and `.xz` files."""
    if path.endswith(".gz"):
        return gzip.open(path, "rb")
    if path.endswith(".xz"):
        return lzma.open(path, "rb")
    return open(path, "rb")


def iter_documents(
    path: str, key: str = "text", skip_bad: bool = False, skipped: Optional[SkipCounter] = None
) -> Iterator[Tuple[int, str]]:
    """Yield (line number, text) for every document of a JSONL file.

    Lines are read as bytes so that invalid UTF-8 is reported at its line instead of
    aborting the whole file in the decoder.
    """
    with open_binary(path) as f:
        for line_no, raw in enumerate(f, start=1):
            text, reason = parse_line(raw, key)
            if reason is not None:
                if not skip_bad:
                    raise BadDocumentError(path, line_no, reason)
                if skipped is not None:
                    skipped.by_reason[reason.split(" (")[0]] += 1
                continue
            if text is not None:
                yield line_no, text
