"""Wall time per iteration of --mixing dga against --mixing uniform, in one run.

Same model, data and layout; k domains, an update every T_r iterations with one probe micro
batch per domain and one for the specific set, and a global batch of G micro batches. A DGA
update costs k + 1 forward/backward passes of one micro batch, so the ideal ratio (probe
compute only, nothing wasted) is 1 + (k + 1) / (T_r x G). The script prints the measured
ratio, the ideal one, and the time of probes and blend re-plans per update.

    python bench/dga_overhead.py                                  # k = 16, T_r = 10, G = 32 micro batches of 1
    python bench/dga_overhead.py --domains 64                     # k = 64
    python bench/dga_overhead.py --domains 64 --pipeline-parallel 2   # PP = 2 (two processes, torchrun)
    python bench/dga_overhead.py --domains 7 --update-interval 10 --probe-batch-size 2 \
        --microbatches 2 --micro-batch-size 8 --seq-length 128     # the early phase of a derived schedule
    python bench/dga_overhead.py --domains 7 --derived-schedule --train-iters 120 --repeats 3 \
        --microbatches 2 --micro-batch-size 8 --seq-length 128     # pretrain's derived schedule, a whole run

With --probe-batch-size P below --micro-batch-size M, each probe is one micro batch of P sequences, as
in the early phase of pretrain's derived schedule (--dga-early-fraction): the ideal ratio becomes
1 + (k + 1) P / (M x T_r x G).

With pipeline parallelism a probe phase costs its micro batches plus one pipeline fill and
drain: the specific micro batches go through one schedule and all k sources' through a second,
so an update wastes 2 (S - 1) slots where k + 1 separate schedules would waste (k + 1)(S - 1).

With --derived-schedule, DGA runs on pretrain's default schedule (no --dga-update-interval: the
interval --dga-probe-budget allows, and its early phase on cut probes) for --train-iters iterations.

Two ratios are printed. The measured ratio compares two runs, made one after the other: on a shared
machine whose speed drifts by several percent between runs, it carries that drift. The in-run ratio,
1 + probe time / training time of the DGA run itself, does not; it leaves out any cost outside the
probes, which the measured ratio includes. --repeats R alternates R pairs of runs and reports the
median of each ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

VOCAB = 8192


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", type=int, default=16)
    p.add_argument("--update-interval", type=int, default=10)
    p.add_argument("--derived-schedule", action="store_true",
                   help="pretrain's default schedule (--dga-probe-budget) instead of --update-interval")
    p.add_argument("--train-iters", type=int, default=120, help="iterations of a run with --derived-schedule")
    p.add_argument("--repeats", type=int, default=1, help="pairs of runs, alternated; medians reported")
    p.add_argument("--microbatches", type=int, default=32, help="micro batches per global batch (G)")
    p.add_argument("--micro-batch-size", type=int, default=1)
    p.add_argument("--probe-batch-size", type=int,
                   help="probe sequences per source at each update (--dga-probe-batch-size; default: one micro batch)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--cycles", type=int, default=3, help="update cycles timed (after one of warmup)")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads in all")
    p.add_argument("--pipeline-parallel", type=int, default=1, help="pipeline stages (one process each)")
    p.add_argument("--alignment", default="adam", choices=["raw", "adam", "cosine"], help="--dga-alignment")
    p.add_argument("--bf16", action="store_true", help="bf16 (GPU)")
    return p.parse_args()


def write_data(directory: str, domains: int, tokens_per_domain: int) -> str:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

    from megatron_dga.data.manifest import DomainEntry, DomainsManifest, TokenizerInfo

    rng = np.random.default_rng(0)

    def write(prefix, n_tokens):
        builder = IndexedDatasetBuilder(get_bin_path(prefix), dtype=np.uint16)
        for _ in range(max(1, n_tokens // 1000)):
            builder.add_document(rng.integers(0, VOCAB - 1, 1000).astype(np.uint16), [1000])
        builder.finalize(get_idx_path(prefix))

    entries = []
    for d in range(domains):
        write(os.path.join(directory, f"d{d:02d}"), tokens_per_domain)
        entries.append(DomainEntry(f"d{d:02d}", f"d{d:02d}", tokens_per_domain // 1000, tokens_per_domain))
    write(os.path.join(directory, "specific"), 20_000)
    path = os.path.join(directory, "domains.json")
    DomainsManifest(TokenizerInfo("synthetic", None, VOCAB, VOCAB - 1), entries).save(path)
    return path


def run(a, directory: str, manifest: str, mixing: str):
    iters = a.train_iters if a.derived_schedule else a.update_interval * (a.cycles + 1)
    schedule = [] if a.derived_schedule else [
        "--dga-update-interval", str(a.update_interval),
        *(["--dga-probe-batch-size", str(a.probe_batch_size)] if a.probe_batch_size else ["--dga-probe-microbatches", "1"])]
    metrics = os.path.join(directory, f"{mixing}.jsonl")
    launcher = [sys.executable, "-m", "megatron_dga.pretrain"]
    if a.pipeline_parallel > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.pipeline_parallel),
                    "-m", "megatron_dga.pretrain", "--pipeline-model-parallel-size", str(a.pipeline_parallel)]
    args = [
        *launcher, "--domains-manifest", manifest, "--mixing", mixing, "--dga-alignment", a.alignment,
        "--specific-data-path", os.path.join(directory, "specific"), "--split", "100,0,0",
        *schedule,
        "--num-layers", str(a.layers), "--hidden-size", str(a.hidden), "--num-attention-heads", str(a.heads),
        "--seq-length", str(a.seq_length), "--micro-batch-size", str(a.micro_batch_size),
        "--global-batch-size", str(a.microbatches * a.micro_batch_size), "--train-iters", str(iters),
        "--log-interval", "1", "--eval-interval", "1000000", "--metrics-file", metrics, "--lr", "1e-4",
        *(["--bf16"] if a.bf16 else []),
    ]
    threads = max(1, a.threads // a.pipeline_parallel)
    subprocess.run(args, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)), stdout=subprocess.DEVNULL)
    with open(metrics) as f:
        records = [json.loads(line) for line in f if '"train"' in line]
    # Iteration t's time includes the update made before it (at t - 1 = 10, 20, ...):
    # time whole cycles after the first one (after the first 10 iterations with --derived-schedule,
    # which keeps every update).
    timed = records[10 if a.derived_schedule else a.update_interval:]
    return timed, records[-1]


def main():
    a = parse()
    k, g, t_r = a.domains, a.microbatches, a.update_interval
    measured, in_run = [], []
    with tempfile.TemporaryDirectory() as directory:
        iters = a.train_iters if a.derived_schedule else (a.cycles + 2) * t_r
        tokens = iters * g * a.micro_batch_size * (a.seq_length + 1) // k * 2 + 10_000
        manifest = write_data(directory, k, tokens)
        for _ in range(a.repeats):
            uniform, _ = run(a, directory, manifest, "uniform")
            dga, last = run(a, directory, manifest, "dga")
            uniform_time = statistics.mean(r["iteration_time"] for r in uniform)
            dga_time = statistics.mean(r["iteration_time"] for r in dga)
            updates = last["dga_updates"]["done"] + last["dga_updates"]["skipped"]
            probe_total = last["mixing_time"]["probe-seconds"]
            dga_total = sum(r["iteration_time"] for r in dga)
            measured.append(dga_time / uniform_time)
            in_run.append(dga_total / (dga_total - probe_total))
            print(f"pair {len(measured)}: uniform {uniform_time * 1000:.1f} ms/iter, dga {dga_time * 1000:.1f} ms/iter "
                  f"({int(updates)} updates, probes {probe_total / updates * 1000:.0f} ms each): "
                  f"measured ratio {measured[-1]:.4f}, in-run ratio {in_run[-1]:.4f}", flush=True)
    replan = last["mixing_time"]["replan-seconds"] / updates
    schedule = "pretrain's derived schedule" if a.derived_schedule else f"T_r = {t_r}"
    print(f"k = {k} domains, {schedule}, global batch = {g} micro batches of {a.micro_batch_size} x "
          f"{a.seq_length} tokens, model {a.layers} x {a.hidden}, PP = {a.pipeline_parallel}, {a.threads} threads, "
          f"--dga-alignment {a.alignment}")
    print(f"uniform: {uniform_time * 1000:9.1f} ms/iter   dga: {dga_time * 1000:9.1f} ms/iter   "
          f"(last pair, over {len(dga)} iterations)")
    print(f"per update: probes {probe_total / updates * 1000:.1f} ms, re-plan {replan * 1000:.2f} ms")
    median_measured, median_in_run = statistics.median(measured), statistics.median(in_run)
    line = f"measured ratio {median_measured:.4f}   in-run ratio {median_in_run:.4f}"
    if a.repeats > 1:
        line += f"   (medians of {a.repeats} pairs)"
    if not a.derived_schedule:
        probe_sequences = a.probe_batch_size or a.micro_batch_size
        ideal = 1 + (k + 1) * probe_sequences / (a.micro_batch_size * t_r * g)  # probe passes in training micro batches
        line += (f"   ideal ratio 1 + (k+1) P/(M x T_r x G) = {ideal:.4f}   "
                 f"measured / ideal = {median_measured / ideal:.4f}")
    print(line)


if __name__ == "__main__":
    main()
