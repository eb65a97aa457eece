"""Cost of the dynamic blend when the weights change at every DGA update, against a training step.

For k = 64, 1024 and 4096 domains, the blend is driven as the trainer drives it: every update
changes the weights (a multiplicative random walk, as exponentiated-gradient steps make) and
T_r iterations of G sequences are then read. Printed per k, after 10 and after 10,000 updates:
- re-plan: `set_weights` plus planning the first global batch, the part in the update;
- cycle: all the blend's work for one update cycle (T_r x G positions);
- the state_dict's size (pickled), and the worst deficit |target - draws| seen so far.
The step time is that of the benchmark model of `bench/train_throughput.py` (plain
megatron-core loop, GPT 4 x 256, seq 256, micro batch 8), measured in the same run; the target
is re-plan below 1% of it.

    python bench/blend_replan.py                  # T_r = 10, G = 32
    python bench/blend_replan.py --updates 1000   # shorter
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_throughput import plain_loop_iteration_times  # noqa: E402

from megatron_dga.data.blend import DynamicBlend  # noqa: E402


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--domains", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--updates", type=int, default=10_000)
    p.add_argument("--update-interval", type=int, default=10, help="T_r")
    p.add_argument("--global-batch", type=int, default=32, help="G, sequences per iteration")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    return p.parse_args()


def drive(k: int, updates: int, t_r: int, g: int, report_at):
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 2.0, k)
    blend = DynamicBlend(k, np.full(k, 1.0 / k))
    target = np.zeros(k)
    position, worst = 0, 0.0
    replan, cycle, reports = [], [], {}
    for u in range(1, updates + 1):
        logits += rng.normal(0.0, 0.3, k)
        w = np.exp(logits - logits.max())
        w /= w.sum()
        start = time.perf_counter()
        blend.set_weights(position, w)
        blend.lookup(position, position + g)
        replan.append(time.perf_counter() - start)
        for _ in range(t_r):
            blend.lookup(position, position + g)
            position += g
            blend.release_before(position)
        cycle.append(time.perf_counter() - start)
        target += blend.weights * t_r * g
        worst = max(worst, float(np.abs(target - blend.draws_before(position)).max()))
        if u in report_at:
            recent = slice(max(0, u - 10), u)
            reports[u] = (statistics.median(replan[recent]), statistics.median(cycle[recent]),
                          len(pickle.dumps(blend.state_dict())), worst)
    return reports


def main():
    a = parse()
    step = statistics.median(plain_loop_iteration_times(argparse.Namespace(
        layers=4, hidden=256, heads=4, seq_length=256, micro_batch_size=8, iters=5, warmup=2, bf16=False,
        threads=a.threads)))
    print(f"training step of the benchmark model: {step * 1000:.1f} ms; 1% = {step * 10:.2f} ms")
    print(f"T_r = {a.update_interval}, G = {a.global_batch}: {a.update_interval * a.global_batch} positions per update")
    print(f"{'k':>6} {'updates':>8} {'re-plan ms':>11} {'% of step':>10} {'cycle ms':>9} {'state KB':>9} "
          f"{'max |deficit|':>14}")
    report_at = {10, a.updates}
    for k in a.domains:
        for u, (replan, cycle, size, worst) in sorted(drive(k, a.updates, a.update_interval, a.global_batch,
                                                            report_at).items()):
            print(f"{k:>6} {u:>8} {replan * 1000:>11.3f} {100 * replan / step:>9.3f}% {cycle * 1000:>9.3f} "
                  f"{size / 1024:>9.1f} {worst:>14.4f}", flush=True)


if __name__ == "__main__":
    main()
