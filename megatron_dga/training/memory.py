"""This process's memory, as the training log reports it.

On a GPU: torch's allocator (`memory_allocated`, `max_memory_allocated`), which is what the
model, optimizer and activations occupy. On the CPU: the resident set of the process (Linux
`VmRSS`, and its high-water mark `VmHWM`), which also holds the interpreter and libraries:
compare the peak with the value at the start of training.

`Peaks` measures the peak of one phase (a DGA update) without losing the run's: the high-water
mark is reset at the phase's start (torch's peak statistics; on Linux, `/proc/self/clear_refs`)
and the run's peak so far is kept aside.
"""

from __future__ import annotations

import resource

import torch


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reading(cuda_reading, status_field: str) -> int:
    if torch.cuda.is_available():
        return cuda_reading()
    try:
        return _proc_status_kib(status_field) * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_bytes() -> int:
    return _reading(torch.cuda.memory_allocated, "VmRSS")


def peak_bytes() -> int:
    return _reading(torch.cuda.max_memory_allocated, "VmHWM")


def _reset_peak() -> bool:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return True
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")  # resets VmHWM to the current resident set
        return True
    except OSError:
        return False


class Peaks:
    """The run's peak, and the peak of each measured phase above the memory at its start."""

    def __init__(self):
        self._run_peak = 0

    def run_peak(self) -> int:
        return max(self._run_peak, peak_bytes())

    def measure(self, phase):
        """Run `phase()`; return its result and its peak above the memory at its start (None
        where the peak cannot be reset)."""
        self._run_peak = self.run_peak()
        start = current_bytes()
        resettable = _reset_peak()
        result = phase()
        extra = peak_bytes() - start if resettable else None
        self._run_peak = self.run_peak()
        return result, extra
