"""Read a run's logged series back, from its metrics file or its TensorBoard events.

Both give the same thing: series named as the TensorBoard scalars (`lm loss`,
`data-mixture/<domain>`, `alignment/<domain>`, `lm loss validation/<set>`, ...), each a list
of (iteration, value) pairs.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

Series = List[Tuple[int, float]]

# Metrics-file groups and the TensorBoard prefixes they are logged under.
_GROUPS = {"data_mixture": "data-mixture", "alignment": "alignment", "domain_epochs": "domain-epochs",
           "domain_tokens": "domain-tokens", "mixing_time": "mixing-time", "dga_source_weights": "dga-source-weights",
           "alignment_stderr": "alignment-stderr", "dga_step": "dga-step", "dga_noise": "dga-noise"}
_SCALARS = {"lm_loss": "lm loss", "learning_rate": "learning-rate", "grad_norm": "grad-norm",
            "iteration_time": "iteration-time", "tokens_per_second": "tokens-per-second"}


@dataclass
class Run:
    name: str
    series: Dict[str, Series] = field(default_factory=dict)

    def group(self, prefix: str) -> Dict[str, Series]:
        """{member: series} of the series named `<prefix>/<member>`."""
        return {name[len(prefix) + 1:]: s for name, s in self.series.items() if name.startswith(prefix + "/")}

    def last(self, name: str):
        return self.series[name][-1][1] if self.series.get(name) else None


def read_metrics_file(path: str, name: str) -> Run:
    series: Dict[str, Series] = defaultdict(list)
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{line_no}: not a metrics record ({e.msg})") from None
            step = record["iteration"]
            if record.get("type") == "validation":
                if record.get("lm_loss_validation") is not None:
                    series["lm loss validation"].append((step, record["lm_loss_validation"]))
                for set_name, value in record.get("per_set", {}).items():
                    series[f"lm loss validation/{set_name}"].append((step, value))
                continue
            for key, tag in _SCALARS.items():
                if record.get(key) is not None:
                    series[tag].append((step, record[key]))
            for key, prefix in _GROUPS.items():
                for member, value in (record.get(key) or {}).items():
                    if value is not None:
                        series[f"{prefix}/{member}"].append((step, value))
    return Run(name, dict(series))


def read_tensorboard(directory: str, name: str) -> Run:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(directory, size_guidance={"scalars": 0})
    events.Reload()
    return Run(name, {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]})


def read_run(path: str, name: str = None) -> Run:
    """A metrics file (.jsonl) or a TensorBoard folder (holding events.out.tfevents.*)."""
    if name is None:
        name = os.path.basename(os.path.dirname(os.path.abspath(path))) if os.path.isfile(path) \
            else os.path.basename(os.path.abspath(path))
    if os.path.isfile(path):
        return read_metrics_file(path, name)
    if os.path.isdir(path) and glob.glob(os.path.join(path, "events.out.tfevents.*")):
        return read_tensorboard(path, name)
    raise FileNotFoundError(f"{path}: neither a metrics file nor a TensorBoard folder with event files")
