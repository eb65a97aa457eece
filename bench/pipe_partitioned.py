"""Pipeline stages exchanging whole activations against activations cut over the tensor-parallel
ranks (DeepSpeed's "pipe_partitioned" and "grad_partitioned", on by default with TP and PP),
measured in one run on TP2 x PP2 (4 ranks).

Each stage then sends 1/TP of every activation and of its gradient to its neighbour, and the
receivers all-gather the pieces over their TP group. The script prints the bytes sent per
micro batch and boundary both ways, the losses of both runs (they must be equal) and the ratio
of iteration times, alternating the two settings over --trials pairs of runs.

    python bench/pipe_partitioned.py [--iters 20] [--trials 2] [--hidden 256] [--seq-length 128]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from pretrain_helpers import make_domains, pretrain, read_metrics  # noqa: E402

TP = PP = 2
WARMUP = 5


def run(root: str, manifest: str, partitioned: bool, trial: int, a) -> tuple:
    ds_config = os.path.join(root, f"ds-{partitioned}.json")
    with open(ds_config, "w") as f:
        json.dump({"pipeline": {"pipe_partitioned": partitioned, "grad_partitioned": partitioned}}, f)
    metrics = os.path.join(root, f"metrics-{partitioned}-{trial}.jsonl")
    pretrain(["--domains-manifest", manifest, "--num-layers", "4", "--hidden-size", str(a.hidden),
              "--num-attention-heads", "4", "--seq-length", str(a.seq_length), "--make-vocab-size-divisible-by", "128",
              "--micro-batch-size", str(a.micro_batch_size), "--global-batch-size", str(8 * a.micro_batch_size),
              "--train-iters", str(a.iters), "--lr", "1e-3", "--hidden-dropout", "0", "--attention-dropout", "0",
              "--log-interval", "1", "--eval-interval", "100000", "--split", "100,0,0",
              "--tensor-model-parallel-size", str(TP), "--pipeline-model-parallel-size", str(PP),
              "--deepspeed_config", ds_config, "--metrics-file", metrics], nproc=TP * PP)
    records = read_metrics(metrics)
    return [r["lm_loss"] for r in records], [r["iteration_time"] for r in records[WARMUP:]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--trials", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--micro-batch-size", type=int, default=2)
    a = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        manifest = make_domains(os.path.join(root, "data"))
        losses, times = {}, {False: [], True: []}
        for trial in range(a.trials):
            for partitioned in (False, True):
                losses[partitioned], iteration_times = run(root, manifest, partitioned, trial, a)
                times[partitioned].append(statistics.median(iteration_times))
    whole = a.seq_length * a.micro_batch_size * a.hidden * 4  # fp32 activations
    print(f"TP{TP} x PP{PP}, hidden {a.hidden}, seq {a.seq_length}, micro batch {a.micro_batch_size}, fp32")
    print(f"bytes per activation sent between stages: whole {whole:,}, partitioned {whole // TP:,} per TP rank")
    print(f"losses equal: {losses[False] == losses[True]} (max relative difference "
          f"{max(abs(x - y) / abs(x) for x, y in zip(losses[False], losses[True])):.2e})")
    for partitioned in (False, True):
        print(f"{'partitioned' if partitioned else 'whole':>11}: median ms/iteration per trial "
              f"{[round(1000 * t, 1) for t in times[partitioned]]}")
    print(f"time ratio partitioned / whole: {sum(times[True]) / sum(times[False]):.3f}")


if __name__ == "__main__":
    main()
