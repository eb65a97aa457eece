"""What each rank is doing, and a watchdog that ends a rank that stops making progress.

A rank that dies makes its peers' next collective fail at once; a rank that hangs (stopped,
stuck in a collective whose peer is stopped, or blocked on a file system) makes them wait for
the process groups' timeout (`--distributed-timeout-minutes`, given to every group). The
collective then raises on the waiting ranks, and `pretrain` reports the rank and the
operation before exiting non-zero, so the launcher ends the job.

The watchdog is the backstop for what no collective timeout covers: a rank that sees no
progress for the timeout plus a margin prints what it was doing and exits with status
EXIT_HUNG, without waiting for anything. Loading and saving a checkpoint are long by nature (a
70B model's shards): they are watched under their own limits (--checkpoint-load-timeout-minutes,
--checkpoint-save-timeout-minutes) rather than the collectives'.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

EXIT_HUNG = 75  # EX_TEMPFAIL: the job may be restarted from its last checkpoint


class Watchdog:
    def __init__(self, rank: int, timeout_seconds: float, margin_seconds: float = 30.0, enabled: bool = True):
        self.rank = rank
        self.margin = margin_seconds
        self.default_limit = timeout_seconds + margin_seconds
        self.limit = self.default_limit
        self.operation = "start-up"
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            self._thread = threading.Thread(target=self._watch, name="megatron-dga-watchdog", daemon=True)
            self._thread.start()

    def now(self, operation: str) -> None:
        """Name what the rank does from now on; its clock restarts, under the default limit."""
        self.operation, self._since, self.limit = operation, time.monotonic(), self.default_limit

    @contextmanager
    def watch(self, operation: str, limit_seconds: float = None):
        """Name what the rank does inside the block (under its own limit, if given, plus the
        margin), then go back to the outer operation."""
        previous, previous_limit = self.operation, self.limit
        self.limit = self.default_limit if limit_seconds is None else limit_seconds + self.margin
        self.operation, self._since = operation, time.monotonic()
        yield  # on an exception the failed operation stays named, for the error message
        self.operation, self._since, self.limit = previous, time.monotonic(), previous_limit

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            stalled = time.monotonic() - self._since
            if stalled > self.limit:
                print(f"rank {self.rank}: no progress for {stalled:.0f} s during {self.operation} "
                      f"(limit: {self.limit:.0f} s in all); exiting", file=sys.stderr, flush=True)
                os._exit(EXIT_HUNG)

    def stop(self) -> None:
        self._stop.set()
