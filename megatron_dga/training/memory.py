"""This process's memory, as the training log reports it.

On a GPU: torch's allocator (`memory_allocated`, `max_memory_allocated`), which is what the
model, optimizer and activations occupy. On the CPU: the resident set of the process (Linux
`VmRSS`, and its high-water mark `VmHWM`), which also holds the interpreter and libraries:
compare the peak with the value at the start of training.
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
