"""The King James Bible, decoded by the `bible` program of the bible-kjv package.

bible-kjv-text stores the text in the program's own compressed format, so the package's
binary does the decoding: `bible -f -p DATA_DIR Gen1:1-Rev22:21` prints one verse a line as
`Ge1:1 In the beginning...`. Each chapter becomes one document (verses one a line, without
their references), `src` = book abbreviation and chapter as printed (`Ge1`, `Rev22`).
"""

from __future__ import annotations

import os
import re
import subprocess
from typing import Iterable, Iterator, Tuple

from .document import Document
from .files import one_file

WHOLE_BIBLE = "Gen1:1-Rev22:21"
_VERSE = re.compile(r"^(?P<book>[1-3]?[A-Za-z]+)(?P<chapter>\d+):(?P<verse>\d+) (?P<text>.*)$")


def run_bible(binary: str, data_dir: str, passage: str = WHOLE_BIBLE, timeout: int = 300) -> str:
    """Output of the package's `bible` program for `passage`."""
    try:
        result = subprocess.run(
            [binary, "-f", "-p", data_dir, passage],
            capture_output=True, timeout=timeout, check=False,
        )  # fmt: skip
    except OSError as e:
        raise RuntimeError(f"cannot run {binary}: {e}") from e
    if result.returncode != 0:
        err = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"{binary} -f -p {data_dir} {passage} exited {result.returncode}: {err}")
    return result.stdout.decode("utf-8", "replace")


def parse_verses(output: str) -> Iterator[Tuple[str, str, str]]:
    """(book, chapter, verse text) per verse; a line that is not a verse continues the last."""
    pending = None
    for line in output.splitlines():
        match = _VERSE.match(line)
        if match:
            if pending:
                yield pending
            pending = (match["book"], match["chapter"], match["text"].strip())
        elif pending and line.strip():
            pending = (pending[0], pending[1], f"{pending[2]} {line.strip()}")
    if pending:
        yield pending


def chapters(verses: Iterable[Tuple[str, str, str]]) -> Iterator[Document]:
    current_ref, lines = None, []  # type: ignore[var-annotated]
    for book, chapter, text in verses:
        ref = f"{book}{chapter}"
        if ref != current_ref and lines:
            yield Document("\n".join(lines), current_ref)
            lines = []
        current_ref = ref
        lines.append(text)
    if lines:
        yield Document("\n".join(lines), current_ref)


def bible_documents(program_root: str, text_root: str) -> Iterator[Document]:
    """Chapters of the KJV from the unpacked bible-kjv (program) and bible-kjv-text (data)."""
    binary = one_file(program_root, "usr/bin/bible")
    data_dir = os.path.dirname(one_file(text_root, "*/bible.data"))
    yield from chapters(parse_verses(run_bible(binary, data_dir)))
