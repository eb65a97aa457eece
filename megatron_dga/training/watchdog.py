"""What each rank is doing, and a watchdog that ends a rank that stops making progress.

A rank that dies makes its peers' next collective fail at once; a rank that hangs (stopped,
stuck in a collective whose peer is stopped, or blocked on a file system) makes them wait for
the process groups' timeout (`--distributed-timeout-minutes`, given to every group). The
collective then raises on the waiting ranks, and `pretrain` reports the rank and the
operation before exiting non-zero, so the launcher ends the job.

The watchdog is the backstop for what no collective timeout covers: a rank that sees no
progress for the timeout plus a margin prints what it was doing and exits with status
EXIT_HUNG, without waiting for anything.
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
        self.limit = timeout_seconds + margin_seconds
        self.operation = "start-up"
        self._since = time.monotonic()
        self._stop = threading.Event()
        self._thread = None
        if enabled:
            self._thread = threading.Thread(target=self._watch, name="megatron-dga-watchdog", daemon=True)
            self._thread.start()

    def now(self, operation: str) -> None:
        """Name what the rank does from now on; its clock restarts."""
        self.operation, self._since = operation, time.monotonic()

    @contextmanager
    def watch(self, operation: str):
        """Name what the rank does inside the block, then go back to the outer operation."""
        previous = self.operation
        self.operation, self._since = operation, time.monotonic()
        yield  # on an exception the failed operation stays named, for the error message
        self.operation, self._since = previous, time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(1.0):
            stalled = time.monotonic() - self._since
            if stalled > self.limit:
                print(f"rank {self.rank}: no progress for {stalled:.0f} s during {self.operation} "
                      f"(limit: --distributed-timeout-minutes plus {self.limit:.0f} s in all); exiting",
                      file=sys.stderr, flush=True)
                os._exit(EXIT_HUNG)

    def stop(self) -> None:
        self._stop.set()
