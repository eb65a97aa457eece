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


def current_bytes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.memory_allocated()
    try:
        return _proc_status_kib("VmRSS") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_bytes() -> int:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    try:
        return _proc_status_kib("VmHWM") * 1024
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
