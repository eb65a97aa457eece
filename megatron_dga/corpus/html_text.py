"""Plain text from HTML documentation pages (DocBook and Sphinx output), standard library only.

Block elements become paragraph or line breaks, list items get a `- ` bullet, whitespace
is collapsed except inside `<pre>`. What is not the page's own text is left out: `<head>`,
scripts and styles, and the navigation blocks documentation generators repeat on every page
(DocBook `navheader`/`navfooter`, tables of contents, Sphinx sidebars and relation bars).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import List, Optional, Tuple

SKIPPED_TAGS = {"head", "script", "style", "nav", "noscript", "template"}
SKIPPED_CLASSES = {
    "navheader", "navfooter", "toc", "sphinxsidebar", "related", "footer", "headerlink",
    "breadcrumbs", "skip-link",
}  # fmt: skip
PARAGRAPH_TAGS = {
    "p", "div", "pre", "table", "ul", "ol", "dl", "blockquote", "section", "article",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "figure", "address",
}  # fmt: skip
LINE_TAGS = {"br", "li", "dt", "dd", "tr", "caption", "title"}
CELL_TAGS = {"td", "th"}
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "wbr", "source"}
_SPACES = re.compile(r"[ \t\r\n\f\v]+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: List[str] = []
        self.pending_break = 0  # newlines owed before the next text
        self.skip: Optional[Tuple[str, int]] = None  # (tag, nesting) of a skipped element
        self.pre_depth = 0
        self.after_bullet = False  # a list item's own paragraph stays on the bullet's line
        self.item_depth = 0  # inside list items, paragraphs are separated by single newlines

    def _request_break(self, newlines: int) -> None:
        if self.item_depth:
            newlines = 1
        if not self.after_bullet:
            self.pending_break = max(self.pending_break, newlines)

    def _emit(self, text: str, bullet: bool = False) -> None:
        if not text:
            return
        if self.pending_break and self.out:
            self.out.append("\n" * self.pending_break)
        self.pending_break = 0
        self.out.append(text)
        self.after_bullet = bullet

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.skip is not None:
            if tag == self.skip[0] and tag not in VOID_TAGS:
                self.skip = (tag, self.skip[1] + 1)
            return
        classes = set((dict(attrs).get("class") or "").split())
        if tag in SKIPPED_TAGS or classes & SKIPPED_CLASSES:
            if tag not in VOID_TAGS:
                self.skip = (tag, 1)
            return
        if tag == "pre":
            self.pre_depth += 1
        if tag in PARAGRAPH_TAGS:
            self._request_break(2)
        elif tag in LINE_TAGS:
            self._request_break(1)
            if tag == "li":
                self.item_depth += 1
                self._emit("- ", bullet=True)
        elif tag in CELL_TAGS and self.out and not self.pending_break:
            self._emit(" ")

    def handle_startendtag(self, tag: str, attrs) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.skip is not None:
            if tag == self.skip[0]:
                depth = self.skip[1] - 1
                self.skip = None if depth == 0 else (tag, depth)
            return
        if tag == "pre":
            self.pre_depth = max(0, self.pre_depth - 1)
        if tag == "li":
            self.item_depth = max(0, self.item_depth - 1)
        if tag in PARAGRAPH_TAGS:
            self._request_break(2)
        elif tag in LINE_TAGS:
            self._request_break(1)

    def handle_data(self, data: str) -> None:
        if self.skip is not None:
            return
        if self.pre_depth:
            self._emit(data)
            return
        text = _SPACES.sub(" ", data)
        at_line_start = not self.out or self.out[-1].endswith("\n") or self.pending_break
        if at_line_start or self.after_bullet:
            text = text.lstrip()
        self._emit(text)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    text = "".join(parser.out)
    # Collapsed inline whitespace can leave spaces at line ends and runs of blank lines.
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()
