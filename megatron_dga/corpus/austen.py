"""Jane Austen's six novels from the r-cran-janeaustenr package, one document per chapter.

The package keeps each novel as an R character vector of lines in its lazy-load database
(`data/Rdata.rdb`). A chapter starts at a line `CHAPTER I` / `Chapter 1`; the front matter
(title, author, `VOLUME I`) goes with the first chapter, and a `VOLUME II` heading with the
chapter after it. `src` is `TITLE#k`, the title as the package spells it on the novel's
first line (`EMMA`, `Persuasion`) and k the chapter's index from 0, so experiments can
split the novels apart by `src`.
"""

from __future__ import annotations

import re
from typing import Iterator, List, Optional, Sequence

from .document import Document
from .rdata import STRSXP, LazyLoadDB, RObject

NOVELS = (
    "emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
    "sensesensibility",
)  # fmt: skip
_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlcdm]+|\d+)\.?\s*$", re.IGNORECASE)
_VOLUME = re.compile(r"^\s*volume\s+([ivxlcdm]+|\d+)\.?\s*$", re.IGNORECASE)


def novel_title(lines: Sequence[Optional[str]]) -> str:
    for line in lines:
        if line and line.strip():
            return line.strip()
    raise ValueError("novel has no text")


def split_chapters(lines: Sequence[Optional[str]]) -> List[str]:
    """The chapters of one novel, front matter joined to the first."""
    chapters, current = [], []  # type: ignore[var-annotated]
    has_chapter = False
    for line in lines:
        line = line or ""  # NA lines are empty lines
        is_chapter, is_volume = bool(_CHAPTER.match(line)), bool(_VOLUME.match(line))
        if (is_chapter or is_volume) and has_chapter:
            chapters.append("\n".join(current))
            current, has_chapter = [], False
        current.append(line)
        has_chapter = has_chapter or is_chapter
    if current:
        chapters.append("\n".join(current))
    return [c for c in chapters if c.strip()]


def novel_documents(lines: Sequence[Optional[str]]) -> Iterator[Document]:
    title = novel_title(lines)
    for i, chapter in enumerate(split_chapters(lines)):
        yield Document(chapter, f"{title}#{i}")


def austen_documents(rdata_base: str, novels: Sequence[str] = NOVELS) -> Iterator[Document]:
    """Chapters of every novel in the lazy-load database at `rdata_base` (.rdb/.rdx)."""
    db = LazyLoadDB(rdata_base)
    for name in novels:
        obj = db.load(name)
        if not isinstance(obj, RObject) or obj.sexptype != STRSXP:
            raise ValueError(f"{db.rdb_path}: object {name!r} is not a character vector")
        yield from novel_documents(obj.value)
