"""Where training numbers go: stdout, TensorBoard and a JSON-lines metrics file.

Only the logging rank (the last rank, on the last pipeline stage, as in Megatron) writes.
TensorBoard scalars use Megatron's names (`lm loss`, `learning-rate`, `grad-norm`,
`iteration-time`, `lm loss validation`) plus per-domain series (`data-mixture/<domain>`,
`lm loss validation/<domain>`, ...). The metrics file holds one JSON object per logged
iteration (`"type": "train"`) and per evaluation (`"type": "validation"`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Optional

from megatron_dga.files import write_text


def _truncate_after(path: str, iteration: int) -> None:
    """On resume, drop records from iterations after the checkpoint: they are about to be
    produced again. The file is rewritten atomically."""
    if not os.path.exists(path):
        return
    kept = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if record.get("iteration", 0) <= iteration:
                kept.append(line if line.endswith("\n") else line + "\n")
    write_text(path, "".join(kept))


class MetricsLogger:
    def __init__(self, enabled: bool, tensorboard_dir: Optional[str], metrics_file: Optional[str],
                 resumed_iteration: int = 0):
        self.enabled = enabled
        self.writer = None
        self.metrics = None
        if not enabled:
            return
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            # After a resume, TensorBoard hides the events of steps after the checkpoint that an
            # earlier, interrupted run wrote: they are about to be written again.
            purge_step = resumed_iteration + 1 if resumed_iteration > 0 else None
            self.writer = SummaryWriter(log_dir=tensorboard_dir, max_queue=100, purge_step=purge_step)
        if metrics_file:
            os.makedirs(os.path.dirname(os.path.abspath(metrics_file)), exist_ok=True)
            if resumed_iteration > 0:
                _truncate_after(metrics_file, resumed_iteration)
            elif os.path.exists(metrics_file):
                os.remove(metrics_file)  # a new run starts a new file
            self.metrics = open(metrics_file, "a", encoding="utf-8")

    def print(self, message: str) -> None:
        if self.enabled:
            print(message, flush=True)

    def scalars(self, iteration: int, values: Dict[str, float]) -> None:
        if self.writer is None:
            return
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(name, value, iteration)

    def record(self, record: dict) -> None:
        if self.metrics is None:
            return
        self.metrics.write(json.dumps(record, sort_keys=False) + "\n")
        self.metrics.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
        if self.metrics is not None:
            self.metrics.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.metrics is not None:
            self.metrics.close()
        sys.stdout.flush()
