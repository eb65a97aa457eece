"""Kill a training run with SIGKILL at random moments, resume it each time with the same command,
and compare the result with an uninterrupted run.

A small DGA run (2 ranks: DP = 2 with ZeRO-1, or PP = 2) saves every few iterations; each
attempt waits until training has gone past its last checkpoint, then kills every rank and the
launcher at a random moment (mid-iteration, mid-probe, mid-save, mid-blend re-plan: wherever
the moment falls). After the last kill the run finishes. Then:
- the final parameters and optimizer state (every tensor of the last checkpoint) must be
  bitwise equal to the uninterrupted run's, and so must the mixture weights and the metrics
  series (loss, learning rate, gradient norm, weights, alignment at every iteration);
- every checkpoint the tracker ever named must load (the last one is loaded by each resume);
- no iteration may appear twice in the metrics file or in TensorBoard.

    python bench/chaos.py                        # 50 kills, DP = 2 + ZeRO-1
    python bench/chaos.py --layout pp2 --kills 20

It prints: kills survived, iterations lost beyond the last checkpoint (work redone), and
whether the result is bitwise equal. tests/test_chaos.py runs the short version.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
import psutil
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))
sys.path.insert(0, REPO)

from pretrain_helpers import SMALL_MODEL, _env, make_domains, read_metrics, run, torchrun_command  # noqa: E402

from megatron_dga.training.checkpointing import checkpoint_name, read_tracker  # noqa: E402

LAYOUTS = {"dp2-zero1": ["--zero-stage", "1"], "pp2": ["--pipeline-model-parallel-size", "2"]}
COMPARED = ("lm_loss", "learning_rate", "grad_norm", "data_mixture", "alignment", "domain_tokens", "consumed_samples")


def run_args(data_dir: str, run_dir: str, layout: str, iters: int, save_interval: int) -> List[str]:
    checkpoints = os.path.join(run_dir, "checkpoints")
    return ["--domains-manifest", os.path.join(data_dir, "domains.json"), *SMALL_MODEL, "--micro-batch-size", "2",
            "--global-batch-size", "8", "--train-iters", str(iters), "--lr", "2e-3", "--split", "90,10,0",
            "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--mixing", "dga", "--dga-update-interval", "3",
            "--dga-alignment", "adam", "--dga-step-scale", "spread", "--dga-lr", "0.5",
            "--specific-data-path", os.path.join(data_dir, "dom1_text_document"),
            "--log-interval", "1", "--eval-interval", "5", "--eval-iters", "1",
            "--save", checkpoints, "--load", checkpoints, "--save-interval", str(save_interval),
            "--metrics-file", os.path.join(run_dir, "metrics.jsonl"),
            "--tensorboard-dir", os.path.join(run_dir, "tb"), *LAYOUTS[layout]]


def last_logged(metrics_file: str) -> int:
    try:
        return max((r["iteration"] for r in read_metrics(metrics_file)), default=0)
    except (OSError, ValueError):
        return 0


def kill_everything(launcher: subprocess.Popen) -> None:
    try:
        processes = psutil.Process(launcher.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        processes = []
    for process in processes:
        try:
            process.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    launcher.kill()
    launcher.wait()


def chaos(data_dir: str, run_dir: str, layout: str, iters: int, save_interval: int, kills: int,
          seed: int) -> Dict[str, float]:
    """Run with `kills` SIGKILLs, then to completion; figures of the ordeal."""
    rng = np.random.default_rng(seed)
    args = run_args(data_dir, run_dir, layout, iters, save_interval)
    checkpoints = os.path.join(run_dir, "checkpoints")
    metrics = os.path.join(run_dir, "metrics.jsonl")
    survived, lost, trackers = 0, 0, set()
    while survived < kills:
        before = read_tracker(checkpoints) or 0
        if before >= iters - save_interval:
            break  # too close to the end to kill again
        launcher = subprocess.Popen(torchrun_command(2, args), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=_env())
        # Wait until training runs past its checkpoint, then strike at a random moment.
        deadline = time.time() + 300
        while last_logged(metrics) <= before and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        # The moment is random in time but bounded in progress, so that a fast machine cannot run
        # past the end before the last kill: at most two save intervals beyond the checkpoint.
        strike_at = time.time() + float(rng.uniform(0.0, 0.5))
        while time.time() < strike_at and last_logged(metrics) < before + 2 * save_interval \
                and launcher.poll() is None:
            time.sleep(0.01)
        if launcher.poll() is not None:
            raise RuntimeError(f"the run ended before it was killed (status {launcher.returncode})")
        logged = last_logged(metrics)
        kill_everything(launcher)
        survived += 1
        after = read_tracker(checkpoints) or 0
        lost += max(0, logged - after)
        trackers.add(after)
    run(torchrun_command(2, args), timeout=1200)
    return {"kills": survived, "iterations_lost": lost, "checkpoints": sorted(trackers)}


def straight_run(data_dir: str, run_dir: str, layout: str, iters: int, save_interval: int) -> None:
    run(torchrun_command(2, run_args(data_dir, run_dir, layout, iters, save_interval)), timeout=1200)


def checkpoint_tensors(folder: str) -> Dict[str, torch.Tensor]:
    """Every tensor of every DeepSpeed file in a checkpoint folder, by file and key path."""
    tensors = {}

    def walk(prefix, value):
        if torch.is_tensor(value):
            tensors[prefix] = value
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}/{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}/{i}", v)

    for path in sorted(glob.glob(os.path.join(folder, "**", "*.pt"), recursive=True)):
        if os.sep + "rng" + os.sep in path:
            continue
        walk(os.path.relpath(path, folder), torch.load(path, map_location="cpu", weights_only=False))
    return tensors


def compare(straight_dir: str, chaos_dir: str, iters: int) -> List[str]:
    """What differs between the runs; empty when bitwise equal."""
    problems = []
    a = {r["iteration"]: r for r in read_metrics(os.path.join(straight_dir, "metrics.jsonl"))}
    records = read_metrics(os.path.join(chaos_dir, "metrics.jsonl"))
    iterations = [r["iteration"] for r in records]
    if sorted(iterations) != list(range(1, iters + 1)) or len(set(iterations)) != len(iterations):
        problems.append(f"metrics file iterations: {iterations}")
    for r in records:
        for key in COMPARED:
            if r.get(key) != a[r["iteration"]].get(key):
                problems.append(f"iteration {r['iteration']}: {key} {r.get(key)} != {a[r['iteration']].get(key)}")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(chaos_dir, "tb"), size_guidance={"scalars": 0})
    events.Reload()
    steps = [e.step for e in events.Scalars("lm loss")]
    if steps != list(range(1, iters + 1)):
        problems.append(f"TensorBoard 'lm loss' steps: {steps}")
    final = checkpoint_name(iters)
    x = checkpoint_tensors(os.path.join(straight_dir, "checkpoints", final))
    y = checkpoint_tensors(os.path.join(chaos_dir, "checkpoints", final))
    if set(x) != set(y):
        problems.append(f"checkpoint tensors differ in names: {sorted(set(x) ^ set(y))[:5]}")
    for name in sorted(set(x) & set(y)):
        if not torch.equal(x[name], y[name]):
            problems.append(f"checkpoint tensor {name} differs")
    return problems


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=50)
    p.add_argument("--layout", default="dp2-zero1", choices=sorted(LAYOUTS))
    p.add_argument("--iters", type=int, default=0, help="default: enough for every kill")
    p.add_argument("--save-interval", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    iters = a.iters or 3 * a.save_interval * a.kills
    work = tempfile.mkdtemp(prefix="chaos-")
    try:
        make_domains(os.path.join(work, "data"))
        start = time.time()
        straight_run(os.path.join(work, "data"), os.path.join(work, "straight"), a.layout, iters, a.save_interval)
        figures = chaos(os.path.join(work, "data"), os.path.join(work, "chaos"), a.layout, iters, a.save_interval,
                        a.kills, a.seed)
        problems = compare(os.path.join(work, "straight"), os.path.join(work, "chaos"), iters)
        print(f"layout {a.layout}, {iters} iterations, a checkpoint every {a.save_interval}")
        print(f"kills survived: {figures['kills']}")
        print(f"iterations lost beyond the last checkpoint (redone after resumes): {figures['iterations_lost']}")
        print(f"bitwise equal to the uninterrupted run: {'yes' if not problems else 'no'}")
        for problem in problems[:20]:
            print("  " + problem)
        print(f"wall time: {time.time() - start:.0f} s")
        return 0 if not problems else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
