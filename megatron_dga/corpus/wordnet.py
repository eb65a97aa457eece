"""WordNet glosses from the `data.noun/verb/adj/adv` files of the wordnet-base package.

A synset line is `offset lex_filenum ss_type w_cnt(hex) word lex_id ... p_cnt pointers...
| gloss`; it becomes `word, other word: gloss` (underscores to spaces, adjective position
markers such as `(a)` removed). The license header lines start with spaces. One gloss is
too short to be a document, so consecutive synsets of a file are grouped into documents of
about `group_chars` characters; `src` = `data.noun#k`.
"""

from __future__ import annotations

import os
import re
from typing import Iterator, List, Optional, Sequence

from .document import Document, decode_bytes

DATA_FILES = ("data.noun", "data.verb", "data.adj", "data.adv")
DEFAULT_GROUP_CHARS = 5000
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def gloss_line(line: str) -> Optional[str]:
    """`words: gloss` for one synset line, None for header or malformed lines."""
    if not line or line[0] == " " or "|" not in line:
        return None
    fields, _, gloss = line.partition("|")
    parts = fields.split()
    try:
        word_count = int(parts[3], 16)
    except (IndexError, ValueError):
        return None
    words = [_ADJ_MARKER.sub("", w).replace("_", " ") for w in parts[4 : 4 + 2 * word_count : 2]]
    return f"{', '.join(words)}: {gloss.strip()}" if words else None


def group_lines(lines: Sequence[str], group_chars: int) -> List[str]:
    groups, current, size = [], [], 0  # type: ignore[var-annotated]
    for line in lines:
        if current and size + len(line) + 1 > group_chars:
            groups.append("\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        groups.append("\n".join(current))
    return groups


def wordnet_documents(
    dict_dir: str, files: Sequence[str] = DATA_FILES, group_chars: int = DEFAULT_GROUP_CHARS
) -> Iterator[Document]:
    for name in files:
        path = os.path.join(dict_dir, name)
        with open(path, "rb") as f:
            glosses = [g for g in (gloss_line(decode_bytes(raw).rstrip("\n")) for raw in f) if g]
        if not glosses:
            raise ValueError(f"{path}: no WordNet synset lines found")
        for i, text in enumerate(group_lines(glosses, group_chars)):
            yield Document(text, f"{name}#{i}")
