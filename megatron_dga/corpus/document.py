"""One corpus document, and the normalisation every document goes through.

Extractors yield `Document(text, src)` with text as found in the package; the builder
normalises it (`normalize_text`) before deduplication and writing, so every domain follows
the same rules: UTF-8, `\\n` line ends, no NUL bytes, no trailing whitespace on any line,
no leading or trailing blank lines.
"""

from __future__ import annotations

from dataclasses import dataclass

# A file that fails strict UTF-8 with at most this share of bad bytes is UTF-8 with a few
# stray bytes; above it, the file is in a legacy 8-bit encoding (Latin-1 in practice).
_MAX_BAD_UTF8_SHARE = 0.001


@dataclass(frozen=True)
class Document:
    text: str
    src: str


def decode_bytes(data: bytes) -> str:
    """Text of a file whose encoding is not declared: UTF-8, else Latin-1."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    replaced = data.decode("utf-8", errors="replace")
    if replaced.count("\ufffd") <= max(1, _MAX_BAD_UTF8_SHARE * len(data)):
        return replaced
    return data.decode("latin-1")


def normalize_text(text: str) -> str:
    """Line ends to `\\n`, NULs and a byte-order mark removed, trailing whitespace stripped."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (from numeric character references)
        text = text.encode("utf-8", errors="replace").decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = [line.rstrip() for line in text.split("\n")]
    start, end = 0, len(lines)
    while start < end and not lines[start]:
        start += 1
    while end > start and not lines[end - 1]:
        end -= 1
    return "\n".join(lines[start:end])
