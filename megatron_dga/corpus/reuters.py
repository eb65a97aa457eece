"""Reuters-21578 news articles in the XML form the r-cran-tm package ships.

Each `<REUTERS>` element is one article: its text is the title, then the dateline and body.
A file may hold one article (`texts/acq/reut-00001.xml`) or several under a root element
(`texts/reuters-21578.xml`); an article seen before (same NEWID) is skipped. `src` is the
file's path, followed by `#NEWID` when the file holds several articles.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Iterator, List, Optional, Sequence, Set

from .document import Document
from .files import find_files


def _text(element: Optional[ET.Element]) -> str:
    return "".join(element.itertext()).strip() if element is not None else ""


def article_text(article: ET.Element) -> str:
    body = article.find("TEXT")
    if body is None:
        return ""
    title = _text(body.find("TITLE"))
    dateline = _text(body.find("DATELINE"))
    main = _text(body.find("BODY"))
    if not (title or main):
        main = _text(body)  # TYPE="UNPROC" articles have bare text
    lead = " ".join(part for part in (dateline, main) if part)
    return "\n\n".join(part for part in (title, lead) if part)


def parse_articles(path: str) -> List[ET.Element]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not well-formed XML ({e})") from e
    return [root] if root.tag == "REUTERS" else root.findall(".//REUTERS")


def reuters_documents(root: str, patterns: Sequence[str]) -> Iterator[Document]:
    seen: Set[str] = set()
    for rel in find_files(root, patterns):
        articles = parse_articles(os.path.join(root, rel))
        for article in articles:
            new_id = article.get("NEWID", "")
            if new_id and new_id in seen:
                continue
            if new_id:
                seen.add(new_id)
            src = rel if len(articles) == 1 else f"{rel}#{new_id}"
            yield Document(article_text(article), src)
