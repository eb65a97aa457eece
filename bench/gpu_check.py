"""The figures of the GPU path, in one go, on a machine with one CUDA GPU (bench/gpu_check.sh).

1. preflight: nvidia-smi, the versions of torch, CUDA, deepspeed and megatron-core, whether
   Transformer Engine and apex import;
2. bf16 training of a ~350M GPT (24 x 1024, 16 heads, 1024-token sequences) with SDPA attention
   and full activation recompute: tokens/s, MFU against --peak-tflops (model FLOPs, recompute not
   counted), peak memory against the estimate, and the first iteration's time against the others'
   (the torch.compile of megatron-core's fusions);
3. a ~1B Llama shape (RMSNorm, SwiGLU, RoPE, grouped-query attention, untied head, no biases) in
   bf16 with ZeRO-1, selective recompute and --mixing dga (adam): peak memory before and after the
   first DGA update against the estimate (with DGA on), 15 iterations saved, then resumed for 5
   more, whose losses must equal those of an uninterrupted run;
4. fused (SDPA) against unfused attention: the losses of the same 10 iterations, dropout off;
5. 10 iterations of fp16 with DGA probes under DeepSpeed's dynamic loss scaling;
6. the DGA overhead ratio, measured / ideal (bench/dga_overhead.py, k = 16).
It prints one summary table and writes every figure to --json.

    bash bench/gpu_check.sh                 # on the GPU machine
    bash bench/gpu_check.sh --cpu           # reduced mode on the CPU (tiny models, fp32 where the
                                            # CPU has no half precision): runs in the test suite
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from train_throughput import VOCAB, flops_per_iteration, write_data  # noqa: E402

GPU_MODEL = dict(layers=24, hidden=1024, heads=16, seq_length=1024, micro_batch_size=8, iters=30, warmup=5)
CPU_MODEL = dict(layers=2, hidden=64, heads=4, seq_length=64, micro_batch_size=4, iters=4, warmup=2)
# ~0.9 B parameters: 16 x 2048, 16 heads in 4 key/value groups, SwiGLU 5632, 32k vocabulary
GPU_LLAMA = dict(layers=16, hidden=2048, heads=16, groups=4, ffn=5632, seq_length=2048, micro_batch_size=1,
                 vocab=32000, global_batch=8)
CPU_LLAMA = dict(layers=2, hidden=64, heads=4, groups=2, ffn=128, seq_length=64, micro_batch_size=2,
                 vocab=VOCAB, global_batch=4)
DGA_INTERVAL = 5  # the first update before iteration 6


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", action="store_true", help="reduced mode on CPU (tiny models)")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the GPU's dense bf16 peak for MFU (H100 SXM: 989; H200: 989)")
    p.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."), "gpu_check.json"),
                   help="where to write the figures (default: $OUT/gpu_check.json, or ./gpu_check.json)")
    return p.parse_args()


def model_flags(m: dict):
    return ["--num-layers", str(m["layers"]), "--hidden-size", str(m["hidden"]), "--num-attention-heads",
            str(m["heads"]), "--seq-length", str(m["seq_length"]), "--micro-batch-size", str(m["micro_batch_size"]),
            "--global-batch-size", str(m["micro_batch_size"]), "--vocab-size", str(VOCAB)]


def llama_flags(m: dict):
    return ["--num-layers", str(m["layers"]), "--hidden-size", str(m["hidden"]), "--num-attention-heads",
            str(m["heads"]), "--group-query-attention", "--num-query-groups", str(m["groups"]),
            "--ffn-hidden-size", str(m["ffn"]), "--swiglu", "--normalization", "RMSNorm",
            "--position-embedding-type", "rope", "--disable-bias-linear", "--untie-embeddings-and-output-weights",
            "--seq-length", str(m["seq_length"]), "--micro-batch-size", str(m["micro_batch_size"]),
            "--global-batch-size", str(m["global_batch"]), "--vocab-size", str(m["vocab"]),
            "--hidden-dropout", "0", "--attention-dropout", "0"]


def train(manifest: str, directory: str, name: str, flags, iters: int, mixing=("--mixing", "uniform")) -> List[dict]:
    metrics = os.path.join(directory, f"{name}.jsonl")
    command = [sys.executable, "-m", "megatron_dga.pretrain", "--domains-manifest", manifest, *flags,
               "--train-iters", str(iters), "--split", "100,0,0", "--log-interval", "1", "--eval-interval", "1000000",
               "--lr", "1e-4", *mixing, "--metrics-file", metrics]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{name} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    with open(metrics, encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["type"] == "train"]


def estimate_gib(flags, on_gpu: bool, with_dga: bool = False) -> float:
    from megatron_dga.arguments import parse_args
    from megatron_dga.memory_estimate import GIB, estimate, total, total_with_dga

    parts = estimate(parse_args(["--domains-manifest", "unused", *flags]), 1, on_gpu=on_gpu)
    return (total_with_dga(parts) if with_dga else total(parts)) / GIB


def version(module: str) -> str:
    try:
        import importlib.metadata as metadata

        return metadata.version(module)
    except Exception:  # noqa: BLE001 - any failure is "absent" for a preflight line
        return "absent"


def preflight(a) -> Dict:
    import torch

    smi = shutil.which("nvidia-smi")
    result = {
        "nvidia-smi": subprocess.run([smi, "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                                     capture_output=True, text=True).stdout.strip() if smi else "absent",
        "torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0],
        "deepspeed": version("deepspeed"), "megatron-core": version("megatron-core"),
        "transformer_engine": importlib.util.find_spec("transformer_engine") is not None,
        "apex": importlib.util.find_spec("apex") is not None,
        "device": "cpu" if a.cpu else torch.cuda.get_device_name(),
    }
    print("preflight: " + ", ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    return result


def throughput(a, manifest, directory, precision) -> Dict:
    m = CPU_MODEL if a.cpu else GPU_MODEL
    flags = [*model_flags(m), *precision, "--attention-backend", "sdpa", "--recompute-granularity", "full"]
    records = train(manifest, directory, "train", flags, m["warmup"] + m["iters"])
    step = statistics.median(r["iteration_time"] for r in records[m["warmup"]:])
    tokens_per_second = m["micro_batch_size"] * m["seq_length"] / step
    args = argparse.Namespace(seq_length=m["seq_length"], hidden=m["hidden"], layers=m["layers"])
    achieved = flops_per_iteration(args, m["micro_batch_size"]) / step / 1e12
    peak = records[-1]["memory_peak_mb"] / 1024
    if a.cpu:  # the resident set holds the interpreter and libraries: count from the start
        peak -= records[-1]["memory_at_start_mb"] / 1024
    result = {"model": f"{m['layers']} x {m['hidden']}, seq {m['seq_length']}, micro batch {m['micro_batch_size']}",
              "tokens_per_second": tokens_per_second, "tflops": achieved, "mfu": achieved / a.peak_tflops,
              "peak_gib": peak, "estimate_gib": estimate_gib(flags, not a.cpu),
              "first_iteration_s": records[0]["iteration_time"], "iteration_s": step}
    print(f"throughput: {tokens_per_second:.0f} tokens/s, {achieved:.2f} TFLOP/s of model FLOPs, "
          f"MFU {result['mfu']:.3f} against {a.peak_tflops:.0f} TFLOP/s", flush=True)
    print(f"peak memory: {peak:.2f} GiB measured, {result['estimate_gib']:.2f} GiB estimated "
          f"(tools/estimate_memory.py)", flush=True)
    print(f"first iteration {result['first_iteration_s']:.2f} s against {step:.3f} s later (compiles the fusions)",
          flush=True)
    return result


def llama_with_dga(a, directory, manifest, specific, precision) -> Dict:
    m = CPU_LLAMA if a.cpu else GPU_LLAMA
    flags = [*llama_flags(m), *precision, "--zero-stage", "1", "--recompute-granularity", "selective"]
    dga = ("--mixing", "dga", "--specific-data-path", specific, "--dga-update-interval", str(DGA_INTERVAL),
           "--dga-alignment", "adam")
    checkpoints = os.path.join(directory, "llama-checkpoints")
    straight = train(manifest, directory, "llama-straight", flags, 20, dga)
    train(manifest, directory, "llama-first", [*flags, "--save", checkpoints, "--exit-interval", "15"], 20, dga)
    resumed = train(manifest, directory, "llama-first", [*flags, "--save", checkpoints, "--load", checkpoints], 20,
                    dga)
    last_five = [r["lm_loss"] for r in straight[-5:]]
    resumed_five = [r["lm_loss"] for r in resumed if r["iteration"] > 15]
    before_update = max(r["memory_peak_mb"] for r in straight if r["iteration"] <= DGA_INTERVAL) / 1024
    after_update = straight[-1]["memory_peak_mb"] / 1024
    if a.cpu:
        before_update -= straight[0]["memory_at_start_mb"] / 1024
        after_update -= straight[0]["memory_at_start_mb"] / 1024
    update = next(r["memory_dga_update_mb"] for r in straight if r.get("memory_dga_update_mb") is not None) / 1024
    with_dga = [*flags, "--mixing", "dga", "--specific-data-path", specific]
    result = {"model": f"{m['layers']} x {m['hidden']}, {m['heads']} heads in {m['groups']} groups, seq "
                       f"{m['seq_length']}", "peak_before_update_gib": before_update, "peak_after_update_gib": after_update,
              "update_gib": update, "estimate_gib": estimate_gib(flags, not a.cpu),
              "estimate_with_dga_gib": estimate_gib(with_dga, not a.cpu, with_dga=True),
              "losses_straight": last_five, "losses_resumed": resumed_five,
              "resume_exact": len(resumed_five) == 5 and resumed_five == last_five,
              "dga_updates": straight[-1]["dga_updates"]["done"]}
    print(f"llama {m['layers']} x {m['hidden']} bf16 ZeRO-1 + DGA: peak {before_update:.2f} GiB before the first "
          f"update, {after_update:.2f} GiB after (an update: {update:.2f} GiB); estimated {result['estimate_gib']:.2f} "
          f"GiB, {result['estimate_with_dga_gib']:.2f} GiB with DGA", flush=True)
    print(f"llama resume after 15 iterations: losses 16-20 {'equal' if result['resume_exact'] else 'DIFFER'} "
          f"({resumed_five} against {last_five})", flush=True)
    return result


def attention(a, manifest, directory, precision) -> Dict:
    m = CPU_MODEL if a.cpu else GPU_MODEL
    no_dropout = [*model_flags(m), *precision, "--hidden-dropout", "0", "--attention-dropout", "0"]
    fused = [r["lm_loss"] for r in train(manifest, directory, "sdpa", [*no_dropout, "--attention-backend", "sdpa"], 10)]
    unfused = [r["lm_loss"] for r in train(manifest, directory, "unfused",
                                            [*no_dropout, "--attention-backend", "unfused"], 10)]
    worst = max(abs(x - y) / abs(y) for x, y in zip(fused, unfused))
    print(f"fused against unfused attention, 10 iterations: losses {fused[0]:.4f} -> {fused[-1]:.4f} and "
          f"{unfused[0]:.4f} -> {unfused[-1]:.4f}, largest relative difference {worst:.2e}", flush=True)
    return {"sdpa": fused, "unfused": unfused, "largest_relative_difference": worst}


def fp16_probes(a, manifest, directory, specific) -> Dict:
    if a.cpu:
        print("fp16 with DGA probes: skipped on the CPU (DeepSpeed's fp16 runs on accelerators)", flush=True)
        return {"skipped": "no fp16 on the CPU"}
    m = GPU_MODEL
    records = train(manifest, directory, "fp16", [*model_flags(m), "--fp16"], 10,
                    ("--mixing", "dga", "--specific-data-path", specific, "--dga-update-interval", "3"))
    last = records[-1]
    result = {"losses": [r["lm_loss"] for r in records], "skipped_iterations": last["skipped_iterations"],
              "dga_updates": last["dga_updates"]["done"], "dga_skipped": last["dga_updates"]["skipped"]}
    print(f"fp16 with DGA probes: loss {records[0]['lm_loss']:.4f} -> {last['lm_loss']:.4f}, "
          f"{result['skipped_iterations']} overflow steps skipped, DGA updates {result['dga_updates']:.0f} done, "
          f"{result['dga_skipped']:.0f} skipped", flush=True)
    return result


def dga_overhead(a) -> Dict:
    m = CPU_MODEL if a.cpu else GPU_MODEL
    overhead = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "dga_overhead.py"),
                "--layers", str(m["layers"]), "--hidden", str(m["hidden"]), "--heads", str(m["heads"]),
                "--seq-length", str(m["seq_length"]), "--alignment", "adam"]
    if a.cpu:
        overhead += ["--microbatches", "4", "--update-interval", "2", "--cycles", "1", "--domains", "4"]
    else:
        overhead += ["--bf16", "--micro-batch-size", "4"]
    result = subprocess.run(overhead, check=True, capture_output=True, text=True)
    line = result.stdout.strip().splitlines()[-1]
    print("DGA overhead: " + line, flush=True)
    return {"line": line}


def main() -> int:
    a = parse()
    import torch

    if not a.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here; use --cpu for the reduced mode", file=sys.stderr)
        return 2
    started = time.time()
    figures: Dict[str, Dict] = {"preflight": preflight(a)}
    precision = [] if a.cpu else ["--bf16"]
    steps = {
        "throughput": lambda d, data, specific: throughput(a, data, d, precision),
        "llama_dga": lambda d, data, specific: llama_with_dga(a, d, data, specific, ["--bf16"]),
        "attention": lambda d, data, specific: attention(a, data, d, precision),
        "fp16_probes": lambda d, data, specific: fp16_probes(a, data, d, specific),
    }
    m = CPU_MODEL if a.cpu else GPU_MODEL
    with tempfile.TemporaryDirectory() as directory:
        longest = max(m["seq_length"], (CPU_LLAMA if a.cpu else GPU_LLAMA)["seq_length"])
        manifest = write_data(directory, 40 * 8 * (longest + 1) + 10_000)
        specific = os.path.join(directory, "a")
        for name, step in steps.items():
            try:
                figures[name] = step(directory, manifest, specific)
            except Exception as e:  # noqa: BLE001 - report every step, then fail
                figures[name] = {"error": str(e)[-2000:]}
                print(f"{name}: FAILED: {str(e)[-2000:]}", flush=True)
    try:
        figures["dga_overhead"] = dga_overhead(a)
    except Exception as e:  # noqa: BLE001
        figures["dga_overhead"] = {"error": str(e)[-2000:]}
    figures["seconds"] = time.time() - started
    summary(figures)
    os.makedirs(os.path.dirname(os.path.abspath(a.json)), exist_ok=True)
    with open(a.json, "w", encoding="utf-8") as f:
        json.dump(figures, f, indent=1)
    print(f"figures written to {a.json} ({figures['seconds']:.0f} s in all)")
    return 1 if any("error" in v for v in figures.values() if isinstance(v, dict)) else 0


def summary(figures: Dict) -> None:
    def row(step, what, value):
        print(f"| {step} | {what} | {value} |")

    print("\n| step | figure | value |\n|---|---|---|")
    for step, values in figures.items():
        if not isinstance(values, dict):
            continue
        if "error" in values:
            row(step, "error", values["error"].splitlines()[-1] if values["error"] else "failed")
            continue
        for key, value in values.items():
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif isinstance(value, list):
                value = ", ".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in value[:5])
            row(step, key, value)
    print()


if __name__ == "__main__":
    sys.exit(main())
