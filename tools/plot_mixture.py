#!/usr/bin/env python
"""Draw the domain weights, alignment scores and losses of one or more runs as PNG files.

    python tools/plot_mixture.py runs/dga/metrics.jsonl runs/uniform/metrics.jsonl --output-dir plots/
    python tools/plot_mixture.py dga=runs/dga/tb uniform=runs/uniform/tb --validation specific

Each run is a metrics file (--metrics-file of the trainer) or a TensorBoard folder
(--tensorboard-dir), optionally prefixed with NAME= (default: the folder's name). Writes
weights.png (stacked domain weights per run), alignment.png (DGA's alignment scores) and
losses.png (training loss and the chosen validation losses, runs overlaid), skipping a
figure when no run has its series.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_dga.monitoring.plots import plot_alignment, plot_losses, plot_weights  # noqa: E402
from megatron_dga.monitoring.runs import read_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="[NAME=]PATH", help="metrics file or TensorBoard folder of a run")
    p.add_argument("--output-dir", default=".", help="where the PNG files go (default: here)")
    p.add_argument("--validation", nargs="*", default=["specific"],
                   help="validation sets to plot (default: specific); 'all' for every one logged")
    a = p.parse_args(argv)
    runs = []
    for spec in a.runs:
        name, sep, path = spec.partition("=")
        try:
            runs.append(read_run(path, name) if sep else read_run(spec))
        except (FileNotFoundError, ValueError) as e:
            p.error(str(e))
    sets = a.validation
    if sets == ["all"]:
        sets = sorted({tag.split("/", 1)[1] for r in runs for tag in r.series if tag.startswith("lm loss validation/")})
    written = [
        plot_weights(runs, os.path.join(a.output_dir, "weights.png")),
        plot_alignment(runs, os.path.join(a.output_dir, "alignment.png")),
        plot_losses(runs, os.path.join(a.output_dir, "losses.png"), sets),
    ]
    for path in filter(None, written):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
