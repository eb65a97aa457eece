"""A deterministic character budget for one domain.

Keeping the first N characters of a domain would keep only what sorts first (dictionary
words in A, kernel files under `arch/`). Instead each document gets a rank from a hash of
its `src` and the domain keeps the documents of lowest rank until the budget is reached,
written back in their original order. The rank depends only on `src`, so the same packages
give the same selection on every run, and a new package version changes texts, not which
documents are kept. The result is the smallest such prefix holding at least the budget (or
everything, when the domain is smaller), so it exceeds the budget by less than one document.

Streaming: a max-heap by rank holds the candidates; a candidate is dropped as soon as the
documents ranked before it already fill the budget. Memory stays near the budget.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from typing import List, Optional, Tuple

from .document import Document


def document_rank(src: str, occurrence: int = 0) -> int:
    """Stable pseudo-random rank of a document, from its source name."""
    key = f"{src}\x00{occurrence}".encode("utf-8")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


class CharBudget:
    """Keeps the lowest-ranked documents whose characters reach `max_chars` (None: keep all)."""

    def __init__(self, max_chars: Optional[int]):
        if max_chars is not None and max_chars <= 0:
            raise ValueError(f"character budget must be positive, got {max_chars}")
        self.max_chars = max_chars
        # entries: (-rank, sequence number, document); heap top = highest rank kept
        self._heap: List[Tuple[int, int, Document]] = []
        self._chars = 0
        self._seq = 0
        self._seen_src: Counter = Counter()
        self._cutoff: Optional[int] = None  # ranks at or above it can never be kept
        self.offered = 0
        self.offered_chars = 0

    def offer(self, doc: Document) -> None:
        self.offered += 1
        self.offered_chars += len(doc.text)
        rank = document_rank(doc.src, self._seen_src[doc.src])
        self._seen_src[doc.src] += 1
        seq, self._seq = self._seq, self._seq + 1
        if self.max_chars is None:
            self._heap.append((-rank, seq, doc))
            return
        if self._cutoff is not None and rank >= self._cutoff:
            return
        heapq.heappush(self._heap, (-rank, seq, doc))
        self._chars += len(doc.text)
        # Drop the highest-ranked document while the others still fill the budget.
        while self._heap and self._chars - len(self._heap[0][2].text) >= self.max_chars:
            neg_rank, _, dropped = heapq.heappop(self._heap)
            self._chars -= len(dropped.text)
            self._cutoff = -neg_rank

    def kept(self) -> List[Document]:
        """The kept documents, in the order they were offered."""
        return [doc for _, _, doc in sorted(self._heap, key=lambda entry: entry[1])]
