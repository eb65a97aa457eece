"""The documents to cluster: where each one is and a bounded prefix of its text.

Only a prefix is kept in memory. It is all an embedder looks at (MiniLM stops at 256 word
pieces, roughly 1,000-1,500 characters of English), and the full documents are copied
from their input files again when the per-cluster files are written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

from megatron_dga.data.jsonl import SkipCounter, iter_documents


@dataclass(frozen=True)
class Document:
    path: str
    line_no: int
    text: str  # the first `max_chars` characters
    chars: int  # length of the whole document


def load_documents(
    paths: Sequence[str],
    key: str = "text",
    max_chars: int = 2048,
    max_docs_per_file: Optional[int] = None,
    skip_bad: bool = False,
    skipped: Optional[SkipCounter] = None,
) -> List[Document]:
    """Documents of every file in order; bad lines raise `BadDocumentError` (path:line)."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    docs: List[Document] = []
    seen = set()
    for path in paths:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"input file not found: {path}")
        if os.path.realpath(path) in seen:
            raise ValueError(f"input file given twice: {path}")
        seen.add(os.path.realpath(path))
        taken = 0
        for line_no, text in iter_documents(path, key, skip_bad=skip_bad, skipped=skipped):
            if max_docs_per_file is not None and taken >= max_docs_per_file:
                break
            docs.append(Document(path, line_no, text[:max_chars], len(text)))
            taken += 1
    return docs


def first_line(text: str, width: int = 100) -> str:
    """The first non-blank line, shortened: what a person reads to recognise a document."""
    for line in text.splitlines():
        if line.strip():
            line = " ".join(line.split())
            return line if len(line) <= width else line[: width - 3] + "..."
    return ""
