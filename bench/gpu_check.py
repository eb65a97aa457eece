"""The figures of the GPU path, in one go, on a machine with one CUDA GPU (bench/gpu_check.sh).

1. bf16 training of a ~350M GPT (24 x 1024, 16 heads, 1024-token sequences) with SDPA attention
   and full activation recompute: tokens/s, and MFU against --peak-tflops (model FLOPs,
   recompute not counted);
2. its peak memory (torch.cuda.max_memory_allocated) against tools/estimate_memory.py's estimate;
3. fused (SDPA) against unfused attention: the losses of the same 10 iterations, dropout off;
4. the DGA overhead ratio, measured / ideal (bench/dga_overhead.py, same model, k = 16).

    bash bench/gpu_check.sh                 # on the GPU machine
    bash bench/gpu_check.sh --cpu           # reduced mode on CPU: a 2 x 64 model, fp32, a few
                                            # iterations (runs in the test suite)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import VOCAB, flops_per_iteration, write_data  # noqa: E402

GPU_MODEL = dict(layers=24, hidden=1024, heads=16, seq_length=1024, micro_batch_size=8, iters=30, warmup=5)
CPU_MODEL = dict(layers=2, hidden=64, heads=4, seq_length=64, micro_batch_size=4, iters=4, warmup=2)


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="reduced mode on CPU (fp32, tiny model)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the GPU's dense bf16 peak for MFU (H100 SXM: 989; H200: 989)")
    return p.parse_args()


def model_flags(m: dict):
    return ["--num-layers", str(m["layers"]), "--hidden-size", str(m["hidden"]), "--num-attention-heads",
            str(m["heads"]), "--seq-length", str(m["seq_length"]), "--micro-batch-size", str(m["micro_batch_size"]),
            "--global-batch-size", str(m["micro_batch_size"]), "--vocab-size", str(VOCAB)]


def train(manifest: str, directory: str, name: str, flags, iters: int):
    metrics = os.path.join(directory, f"{name}.jsonl")
    command = [sys.executable, "-m", "megatron_dga.pretrain", "--domains-manifest", manifest, *flags,
               "--train-iters", str(iters), "--split", "100,0,0", "--log-interval", "1", "--eval-interval", "1000000",
               "--lr", "1e-4", "--mixing", "uniform", "--metrics-file", metrics]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    with open(metrics, encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["type"] == "train"]


def estimate_gib(flags, on_gpu: bool) -> float:
    from megatron_dga.arguments import parse_args
    from megatron_dga.memory_estimate import GIB, estimate, total

    return total(estimate(parse_args(["--domains-manifest", "unused", *flags]), 1, on_gpu=on_gpu)) / GIB


def main() -> int:
    a = parse()
    import torch

    if not a.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here; use --cpu for the reduced mode", file=sys.stderr)
        return 2
    m = CPU_MODEL if a.cpu else GPU_MODEL
    precision = [] if a.cpu else ["--bf16"]
    flags = [*model_flags(m), *precision, "--attention-backend", "sdpa", "--recompute-granularity", "full"]
    with tempfile.TemporaryDirectory() as directory:
        tokens = (m["iters"] + m["warmup"] + 12) * m["micro_batch_size"] * (m["seq_length"] + 1) + 10_000
        manifest = write_data(directory, tokens)

        records = train(manifest, directory, "train", flags, m["warmup"] + m["iters"])
        step = statistics.median(r["iteration_time"] for r in records[m["warmup"]:])
        tokens_per_second = m["micro_batch_size"] * m["seq_length"] / step
        args = argparse.Namespace(seq_length=m["seq_length"], hidden=m["hidden"], layers=m["layers"])
        achieved = flops_per_iteration(args, m["micro_batch_size"]) / step / 1e12
        print(f"model {m['layers']} x {m['hidden']}, {m['heads']} heads, seq {m['seq_length']}, micro batch "
              f"{m['micro_batch_size']}, {'fp32 on CPU' if a.cpu else 'bf16 on ' + torch.cuda.get_device_name()}, "
              f"SDPA attention, full recompute")
        print(f"throughput: {tokens_per_second:.0f} tokens/s, {achieved:.2f} TFLOP/s of model FLOPs, "
              f"MFU {achieved / a.peak_tflops:.3f} against {a.peak_tflops:.0f} TFLOP/s")

        peak = records[-1]["memory_peak_mb"] / 1024
        if a.cpu:  # the resident set holds the interpreter and libraries: count from the start
            peak -= records[-1]["memory_at_start_mb"] / 1024
        print(f"peak memory: {peak:.2f} GiB measured, {estimate_gib(flags, not a.cpu):.2f} GiB estimated "
              f"(tools/estimate_memory.py)")

        no_dropout = [*model_flags(m), *precision, "--hidden-dropout", "0", "--attention-dropout", "0"]
        fused = [r["lm_loss"] for r in train(manifest, directory, "sdpa", [*no_dropout, "--attention-backend", "sdpa"], 10)]
        unfused = [r["lm_loss"] for r in train(manifest, directory, "unfused",
                                                [*no_dropout, "--attention-backend", "unfused"], 10)]
        worst = max(abs(x - y) / abs(y) for x, y in zip(fused, unfused))
        print(f"fused against unfused attention, 10 iterations: losses {fused[0]:.4f} -> {fused[-1]:.4f} and "
              f"{unfused[0]:.4f} -> {unfused[-1]:.4f}, largest relative difference {worst:.2e}")

    overhead = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "dga_overhead.py"),
                "--layers", str(m["layers"]), "--hidden", str(m["hidden"]), "--heads", str(m["heads"]),
                "--seq-length", str(m["seq_length"]), "--alignment", "adam"]
    if a.cpu:
        overhead += ["--microbatches", "4", "--update-interval", "2", "--cycles", "1", "--domains", "4"]
    else:
        overhead += ["--bf16", "--micro-batch-size", "4"]
    result = subprocess.run(overhead, check=True, capture_output=True, text=True)
    print("DGA overhead: " + result.stdout.strip().splitlines()[-1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
