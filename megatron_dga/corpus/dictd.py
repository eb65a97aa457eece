"""dictd dictionaries (`NAME.index` + `NAME.dict.dz`), one document per headword.

The index has one line per (headword, definition): `headword TAB offset TAB length`, offset
and length in dictd's base64 (digits `A-Za-z0-9+/`, most significant first) counting bytes
of the uncompressed `.dict` (the `.dz` is gzip-compatible). Consecutive index lines with the
same headword (homographs, several senses) make one document, each definition block used
once even when several headwords point at it. dictd's own `00-database-*` entries
(dictionary name, URL, format info) are not dictionary text and are skipped.
`src` = `NAME:headword`.
"""

from __future__ import annotations

import gzip
import os
from typing import Iterator, List, Set, Tuple

from .document import Document, decode_bytes

_B64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUE = {c: i for i, c in enumerate(_B64_DIGITS)}
_METADATA_PREFIXES = ("00-database", "00database")


def decode_b64_number(text: str) -> int:
    value = 0
    for ch in text:
        if ch not in _B64_VALUE:
            raise ValueError(f"invalid dictd base64 digit {ch!r} in {text!r}")
        value = value * 64 + _B64_VALUE[ch]
    return value


def encode_b64_number(value: int) -> str:
    """Inverse of `decode_b64_number` (used to build small dictionaries)."""
    digits = ""
    while True:
        value, digit = divmod(value, 64)
        digits = _B64_DIGITS[digit] + digits
        if value == 0:
            return digits


def read_index(path: str) -> List[Tuple[str, int, int]]:
    entries = []
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            line = decode_bytes(raw).rstrip("\n")
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 3:
                raise ValueError(f"{path}:{line_no}: expected 'word<TAB>offset<TAB>length'")
            try:
                entries.append((parts[0], decode_b64_number(parts[1]), decode_b64_number(parts[2])))
            except ValueError as e:
                raise ValueError(f"{path}:{line_no}: {e}") from None
    return entries


Span = Tuple[int, int]  # (offset, length) in the uncompressed .dict


def headword_groups(entries: List[Tuple[str, int, int]]) -> Iterator[Tuple[str, List[Span]]]:
    """(headword, [(offset, length), ...]) for each run of lines with the same headword."""
    group_word, spans = None, []  # type: ignore[var-annotated]
    for word, offset, length in entries:
        if group_word is not None and word.casefold() != group_word.casefold():
            yield group_word, spans
            spans = []
        if not spans:
            group_word = word
        spans.append((offset, length))
    if spans:
        yield group_word, spans  # type: ignore[misc]


def dictd_documents(index_path: str, dict_path: str, name: str = "") -> Iterator[Document]:
    name = name or os.path.basename(index_path).split(".")[0]
    with open(dict_path, "rb") as f:
        raw = f.read()
    data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    used: Set[Span] = set()
    for word, spans in headword_groups(read_index(index_path)):
        if word.lower().startswith(_METADATA_PREFIXES):
            continue
        blocks = []
        for offset, length in spans:
            if (offset, length) in used:
                continue
            if offset + length > len(data):
                raise ValueError(
                    f"{index_path}: entry {word!r} points past the end of {dict_path} "
                    f"({offset}+{length} > {len(data)} bytes)"
                )
            used.add((offset, length))
            blocks.append(decode_bytes(data[offset : offset + length]).strip("\n"))
        if blocks:
            yield Document("\n\n".join(blocks), f"{name}:{word}")
