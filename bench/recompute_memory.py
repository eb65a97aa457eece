"""Peak memory of one rank with and without activation recompute and sequence parallelism, in
one run of each.

A model where activations dominate (narrow, long sequences, a large micro batch): the same
training with --recompute-granularity none, selective and full on one rank, then TP=2 with and
without --sequence-parallel, with selective recompute (Megatron's usual pairing: the attention
scores, which TP alone divides, are not kept, so what sequence parallelism divides shows). The
peak is rank 0's: the allocator's (torch.cuda.max_memory_allocated) on a GPU, and on the CPU the
resident set's high-water mark minus its value when training starts. Each is printed with tools/estimate_memory.py's estimate.

    python bench/recompute_memory.py                     # CPU default: 4 x 64, seq 512, micro batch 16
    python bench/recompute_memory.py --layers 24 --hidden 1024 --heads 16 --seq-length 2048 --bf16   # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from pretrain_helpers import torchrun_command  # noqa: E402
from train_throughput import VOCAB, write_data  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=512)
    p.add_argument("--micro-batch-size", type=int, default=16)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--attention-backend", default="unfused", choices=["sdpa", "unfused"],
                   help="unfused keeps the attention scores, which selective recompute drops")
    return p.parse_args()


def peak_gib(a, manifest: str, directory: str, granularity, tp: int = 1, sequence_parallel: bool = False):
    flags = ["--tensor-model-parallel-size", str(tp), *(["--sequence-parallel"] if sequence_parallel else []),
             "--num-layers", str(a.layers), "--hidden-size", str(a.hidden), "--num-attention-heads", str(a.heads),
             "--seq-length", str(a.seq_length), "--micro-batch-size", str(a.micro_batch_size),
             "--vocab-size", str(VOCAB), "--attention-backend", a.attention_backend, *(["--bf16"] if a.bf16 else []),
             *(["--recompute-granularity", granularity] if granularity else [])]
    metrics = os.path.join(directory, f"{granularity}-tp{tp}-sp{int(sequence_parallel)}.jsonl")
    subprocess.run(torchrun_command(tp, ["--domains-manifest", manifest, *flags, "--train-iters", str(a.iters),
                                         "--split", "100,0,0", "--log-interval", "1", "--eval-interval", "1000000",
                                         "--metrics-file", metrics]), check=True, stdout=subprocess.DEVNULL)
    with open(metrics, encoding="utf-8") as f:
        last = [r for r in map(json.loads, f) if r["type"] == "train"][-1]
    measured = last["memory_peak_mb"] - (0 if _on_gpu() else last["memory_at_start_mb"])

    from megatron_dga.arguments import parse_args
    from megatron_dga.memory_estimate import GIB, estimate, total

    parts = estimate(parse_args(["--domains-manifest", manifest, *flags]), tp, on_gpu=_on_gpu())
    return measured / 1024, total(parts) / GIB


def _on_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def main() -> int:
    a = parse()
    with tempfile.TemporaryDirectory() as directory:
        tokens = (a.iters + 2) * a.micro_batch_size * (a.seq_length + 1) + 10_000
        manifest = write_data(directory, tokens)
        print(f"model {a.layers} x {a.hidden}, {a.heads} heads, seq {a.seq_length}, micro batch {a.micro_batch_size}, "
              f"{'bf16' if a.bf16 else 'fp32'}, {a.attention_backend} attention, "
              f"{'GPU allocator peak' if _on_gpu() else 'CPU resident-set peak above its start'}")
        baseline = None
        for granularity in (None, "selective", "full"):
            measured, estimated = peak_gib(a, manifest, directory, granularity)
            baseline = baseline or measured
            print(f"recompute {granularity or 'none':<9}: peak {measured:6.3f} GiB ({measured / baseline:.2f} of none), "
                  f"estimate {estimated:6.3f} GiB")
        tp2 = None
        for sequence_parallel in (False, True):
            measured, estimated = peak_gib(a, manifest, directory, "selective", tp=2,
                                           sequence_parallel=sequence_parallel)
            tp2 = tp2 or measured
            print(f"TP=2, selective recompute, {'with' if sequence_parallel else 'without'} sequence parallelism: "
                  f"peak of rank 0 {measured:6.3f} GiB ({measured / tp2:.2f} of without), estimate {estimated:6.3f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
