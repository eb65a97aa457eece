"""When training stops before its last iteration.

    diverged:   --check-for-nan-in-loss-and-grad: a loss or gradient norm that is not finite
    requested:  SIGTERM with --exit-signal-handler, or --exit-duration-in-mins reached
"""

from __future__ import annotations

import math
import signal
import time
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_dga.config import TrainingConfig
from megatron_dga.training.checkpointing import read_tracker


class TrainingDivergedError(RuntimeError):
    """A loss or gradient norm that is not finite."""


def check_finite(result, iteration: int, batch_domains: Callable[[], np.ndarray], domain_names: List[str],
                 save_dir: Optional[str]) -> None:
    """Raise TrainingDivergedError at a loss or gradient norm that is not finite, naming the
    domains the global batch drew from and the last checkpoint (a skipped fp16 overflow step is
    DeepSpeed's business, not divergence)."""
    bad = []
    # One host read per iteration, this check's price: the loss and the norm travel together.
    pair = [result.loss, result.grad_norm if result.grad_norm is not None else float("nan")]
    device = result.loss.device if torch.is_tensor(result.loss) else None
    loss, grad_norm = torch.stack([torch.as_tensor(x, dtype=torch.float32, device=device) for x in pair]).tolist()
    grad_norm = None if result.grad_norm is None else grad_norm
    if not math.isfinite(loss):
        bad.append(f"the loss is {loss}")
    if grad_norm is not None and not math.isfinite(grad_norm) and not result.skipped:
        bad.append(f"the gradient norm is {grad_norm}")
    if not bad:
        return
    counts = np.bincount(batch_domains(), minlength=len(domain_names))
    drawn = ", ".join(f"{domain_names[d]} x{counts[d]}" for d in np.flatnonzero(counts))
    last = read_tracker(save_dir) if save_dir else None
    raise TrainingDivergedError(
        f"iteration {iteration}: {' and '.join(bad)}; its global batch drew from {drawn}. "
        f"Nothing was saved; the last checkpoint is {'iteration ' + str(last) if last is not None else 'none'}."
    )


class StopRequests:
    """SIGTERM (--exit-signal-handler) and the time limit (--exit-duration-in-mins)."""

    def __init__(self, training: TrainingConfig, device):
        self.exit_signal_handler = training.exit_signal_handler
        self.exit_duration_in_mins = training.exit_duration_in_mins
        self.device = device
        self.signal_received = False
        self.started = time.time()

    def install(self) -> None:
        """From now on: the clock of --exit-duration-in-mins runs, SIGTERM is noted."""
        self.started = time.time()
        if self.exit_signal_handler:
            def received(signum, frame):
                self.signal_received = True
            signal.signal(signal.SIGTERM, received)

    def requested(self) -> Optional[str]:
        """Why to stop, or None; every rank gets the same answer. Ask at log intervals only
        (where the host reads the iteration's results anyway): the all-reduce and its read
        would otherwise hold every iteration on the host."""
        if not (self.exit_signal_handler or self.exit_duration_in_mins):
            return None
        out_of_time = bool(self.exit_duration_in_mins) and time.time() - self.started > 60.0 * self.exit_duration_in_mins
        flags = torch.tensor([float(self.signal_received), float(out_of_time)], device=self.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if flags[0] > 0:
            return "SIGTERM received (--exit-signal-handler)"
        if flags[1] > 0:
            return f"--exit-duration-in-mins {self.exit_duration_in_mins} reached"
        return None
