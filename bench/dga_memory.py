"""DGA's own memory: the same training with --mixing uniform and --mixing dga, measured against
the DGA line of the memory estimate (megatron_dga/memory_estimate.py), in one run of each.

    python bench/dga_memory.py                 # CPU default: GPT-2 vocabulary, 2 x 256, seq 128
    python bench/dga_memory.py --bf16 --layers 8 --hidden 2048 --heads 16    # on a GPU

A model whose parameters dominate its memory (a GPT-2-sized vocabulary, short sequences), so
that what DGA adds shows. Each run trains a few iterations with a DGA update every 2; the
printed figures are rank 0's, in bytes per parameter of the rank:
- at start: what DGA holds between updates (the process's memory when training starts, DGA's
  run against uniform's; on a GPU, the allocator's);
- during an update: the peak of the last update above the memory when it started
  (`memory/dga-update-mb`), next to the estimate's `dga (during an update)`, and their ratio;
- peak: DGA's extra peak over the whole run (the high-water mark minus the memory at start,
  DGA's run against uniform's), next to the estimate's (the update's peak above the memory held
  between steps, where it is above the training step's).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pretrain_helpers import torchrun_command  # noqa: E402
from train_throughput import write_data  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--vocab-size", type=int, default=50257)
    p.add_argument("--iters", type=int, default=6)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--alignment", default="adam", choices=["raw", "adam", "cosine"])
    return p.parse_args()


def flags_of(a, manifest: str, specific: str, mixing: str):
    flags = ["--domains-manifest", manifest, "--num-layers", str(a.layers), "--hidden-size", str(a.hidden),
             "--num-attention-heads", str(a.heads), "--seq-length", str(a.seq_length),
             "--micro-batch-size", str(a.micro_batch_size), "--vocab-size", str(a.vocab_size),
             "--mixing", mixing, *(["--bf16"] if a.bf16 else [])]
    if mixing == "dga":
        flags += ["--specific-data-path", specific, "--dga-update-interval", "2", "--dga-alignment", a.alignment]
    return flags


def measured(a, flags, directory: str, name: str):
    """(memory at start, extra peak, the last DGA update's peak above its start) of rank 0, in
    bytes, and its parameter count."""
    metrics = os.path.join(directory, f"{name}.jsonl")
    result = subprocess.run(torchrun_command(1, [*flags, "--train-iters", str(a.iters), "--split", "100,0,0",
                                                 "--log-interval", "1", "--eval-interval", "1000000",
                                                 "--metrics-file", metrics]),
                            check=True, capture_output=True, text=True)
    parameters = int(result.stdout.split("model parallel rank (0, 0): ")[1].split()[0])
    with open(metrics, encoding="utf-8") as f:
        last = [r for r in map(json.loads, f) if r["type"] == "train"][-1]
    mb = 2 ** 20
    update = last.get("memory_dga_update_mb")
    return (last["memory_at_start_mb"] * mb, (last["memory_peak_mb"] - last["memory_at_start_mb"]) * mb,
            None if update is None else update * mb, parameters)


def main() -> int:
    a = parse()
    import torch

    from megatron_dga.arguments import parse_args
    from megatron_dga.memory_estimate import estimate, total, total_with_dga

    on_gpu = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as directory:
        tokens = (a.iters + 4) * 4 * a.micro_batch_size * (a.seq_length + 1) + 20_000
        manifest = write_data(directory, tokens)
        specific = os.path.join(directory, "a")
        runs = {}
        for mixing in ("uniform", "dga"):
            runs[mixing] = measured(a, flags_of(a, manifest, specific, mixing), directory, mixing)
        config = parse_args(flags_of(a, manifest, specific, "dga"))
        parts = estimate(config, 1, on_gpu=on_gpu)
    n = runs["dga"][3]
    at_start = (runs["dga"][0] - runs["uniform"][0]) / n
    extra = (runs["dga"][1] - runs["uniform"][1]) / n
    update = runs["dga"][2] / n
    estimated_update = parts["dga (during an update)"] / n
    estimated_extra = (total_with_dga(parts) - total(parts)) / n
    print(f"model {a.layers} x {a.hidden}, vocabulary {a.vocab_size}, seq {a.seq_length}, micro batch "
          f"{a.micro_batch_size}, {'bf16' if a.bf16 else 'fp32'}, --dga-alignment {a.alignment}, "
          f"{'GPU' if on_gpu else 'CPU'}: {n / 1e6:.1f} M parameters on rank 0")
    print(f"  DGA over uniform, at start:         {at_start:6.2f} bytes per parameter")
    print(f"  an update, above its start:         {update:6.2f} bytes per parameter; estimated {estimated_update:6.2f} "
          f"(measured / estimated {update / estimated_update:.2f})")
    print(f"  DGA over uniform, peak of the run:  {extra:6.2f} bytes per parameter; estimated {estimated_extra:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
