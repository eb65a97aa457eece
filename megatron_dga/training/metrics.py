"""Where training numbers go: stdout, TensorBoard and a JSON-lines metrics file.

Only the logging rank (the last rank, on the last pipeline stage, as in Megatron) writes.
TensorBoard scalars use Megatron's names (`lm loss`, `learning-rate`, `grad-norm`,
`iteration-time`, `lm loss validation`) plus per-domain series (`data-mixture/<domain>`,
`lm loss validation/<domain>`, ...); the 'vs samples' twins go to the `vs-samples` folder under
the TensorBoard directory. The metrics file holds one JSON object per logged
iteration (`"type": "train"`) and per evaluation (`"type": "validation"`).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Optional

from megatron_dga.files import write_text

# Megatron's scalars that it also writes against consumed samples ('<name> vs samples').
VS_SAMPLES = ("lm loss", "learning-rate", "batch-size", "loss-scale", "grad-norm", "params-norm", "world-size",
              "lm loss validation", "lm loss validation ppl")
SAMPLES_FOLDER = "vs-samples"  # under --tensorboard-dir: the 'vs samples' series


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



def print_line(message: str) -> None:
    """`message` and its newline in one write: ranks share one stdout, and print() writes the two apart
    when unbuffered (PYTHONUNBUFFERED), which lets another rank's line land inside this one."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class MetricsLogger:
    def __init__(self, enabled: bool, tensorboard_dir: Optional[str], metrics_file: Optional[str],
                 resumed_iteration: int = 0, queue_size: int = 100, wandb_settings: Optional[dict] = None,
                 resumed_samples: int = 0):
        self.enabled = enabled
        self.writer = self.samples_writer = None
        self.metrics = None
        self.wandb = None
        if not enabled:
            return
        if wandb_settings and wandb_settings.get("project"):
            self.wandb = open_wandb(**wandb_settings, default_dir=os.path.dirname(os.path.abspath(tensorboard_dir))
                                    if tensorboard_dir else os.getcwd(), resumed_iteration=resumed_iteration)
        if tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            # TensorBoard hides the events that an earlier, interrupted run wrote after the point
            # this run starts from (its checkpoint, or the beginning): they are about to be
            # written again. It hides by step across every tag of a folder, so the series stepped
            # by consumed samples live in a folder of their own, hidden from their own point.
            self.writer = SummaryWriter(log_dir=tensorboard_dir, max_queue=queue_size,
                                        purge_step=resumed_iteration + 1)
            self.samples_writer = SummaryWriter(log_dir=os.path.join(tensorboard_dir, SAMPLES_FOLDER),
                                                max_queue=queue_size, purge_step=resumed_samples + 1)
        if metrics_file:
            os.makedirs(os.path.dirname(os.path.abspath(metrics_file)), exist_ok=True)
            if resumed_iteration > 0:
                _truncate_after(metrics_file, resumed_iteration)
            elif os.path.exists(metrics_file):
                os.remove(metrics_file)  # a new run starts a new file
            self.metrics = open(metrics_file, "a", encoding="utf-8")

    def print(self, message: str) -> None:
        if self.enabled:
            print_line(message)

    def scalars(self, iteration: int, values: Dict[str, float], samples: Optional[int] = None) -> None:
        """Scalars at `iteration`; with `samples` (consumed samples), Megatron's 'vs samples'
        twins of its own scalars too."""
        values = {name: value for name, value in values.items() if value is not None}
        if samples is not None:
            values.update({f"{name} vs samples": value for name, value in values.items() if name in VS_SAMPLES})
        if self.writer is not None:
            for name, value in values.items():
                if name.endswith(" vs samples"):
                    self.samples_writer.add_scalar(name, value, samples)
                else:
                    self.writer.add_scalar(name, value, iteration)
        if self.wandb is not None:
            self.wandb.log({name: value for name, value in values.items() if not name.endswith(" vs samples")},
                           step=iteration)

    def record(self, record: dict) -> None:
        if self.metrics is None:
            return
        self.metrics.write(json.dumps(record, sort_keys=False) + "\n")
        self.metrics.flush()

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.samples_writer.flush()
        if self.metrics is not None:
            self.metrics.flush()

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()
        if self.writer is not None:
            self.writer.close()
            self.samples_writer.close()
        if self.metrics is not None:
            self.metrics.close()
        sys.stdout.flush()


def open_wandb(project: str, name: Optional[str], save_dir: Optional[str], config: dict, default_dir: str,
               resumed_iteration: int = 0):
    """A Weights & Biases run (Megatron's --wandb-project, --wandb-exp-name, --wandb-save-dir),
    offline unless WANDB_MODE says otherwise: these machines reach no W&B server, and
    `wandb sync` uploads an offline run later."""
    try:
        import wandb
    except ImportError:
        raise ValueError("--wandb-project needs the wandb package (pip install wandb)") from None
    directory = save_dir or default_dir
    os.makedirs(directory, exist_ok=True)
    return wandb.init(project=project, name=name, dir=directory, config=config,
                      mode=os.environ.get("WANDB_MODE", "offline"), resume="allow" if resumed_iteration else None)
