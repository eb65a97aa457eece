"""fortune(6) cookie files: quotations separated by lines holding a single `%`.

Each quotation is one document, `src` = `<file>#<index>`. The `.dat` index files and the
`.u8` links next to the cookie files are not text and are skipped by the caller's patterns.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, List, Sequence

from .document import Document
from .files import find_files, read_text

_SEPARATOR = re.compile(r"^%\s*$")


def split_fortunes(text: str) -> List[str]:
    """The quotations of one cookie file, blank ones dropped."""
    quotes, current = [], []
    for line in text.splitlines():
        if _SEPARATOR.match(line):
            quotes.append("\n".join(current))
            current = []
        else:
            current.append(line)
    quotes.append("\n".join(current))
    return [q for q in quotes if q.strip()]


def fortune_documents(
    root: str, patterns: List[str], exclude: Sequence[str] = ()
) -> Iterator[Document]:
    for rel in find_files(root, patterns, exclude=["*.dat", "*.u8", *exclude]):
        for i, quote in enumerate(split_fortunes(read_text(os.path.join(root, rel)))):
            yield Document(quote, f"{rel}#{i}")
