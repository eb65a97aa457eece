"""One training run of the Austen experiments: a method, a regime, a seed.

    python examples/austen/run.py --prepared W/prepared.json --method dga-ema --regime token-limited \
        --seed 1 --out W/runs/token-limited/dga-ema/seed1

Methods (all with the same model, steps and tokens):
    uniform, natural      fixed mixtures
    static                a fixed mixture given by --mixture (name=weight,...), as in the headroom search
    importance            the specific set's histogram over the domains (tools/cluster_domains.py --assign)
    dga, dga-ema          DGA without EMA (--dga-ema 0) and with it (--dga-ema EMA)
Regimes:
    plenty                all generic tokens, the whole specific set
    token-limited         every generic domain capped to --domain-max-tokens, so domains repeat
    few-specific          the specific set cut to --specific-train-samples sequences
Every run evaluates each domain and the held-out novel, which is the run's
--specific-valid-data-path and so is logged as `lm loss validation/specific`. It is launched on --nproc ranks by the deepspeed launcher, and
skipped when its metrics file already reaches the last iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from megatron_dga.files import write_json  # noqa: E402

METHODS = ["uniform", "natural", "static", "importance", "dga", "dga-ema"]
REGIMES = ["plenty", "token-limited", "few-specific"]

# Variants of DGA's score and step (docs/dga.md), added to the flags of the dga methods; every
# variant spells out each part, so it means the same whatever the framework's defaults.
# "raw": the paper's update (raw inner product, step eta x score, no control).
# "rms": the step in log-weight units (the running scale of the scores, eta 0.5), nothing else.
# "control" (the framework's default, adam-control): also clipped to [-1, 1], following a
# moving average of the scores, and scaled by the learning-rate ratio.
NO_CONTROL = ["--dga-step-scale", "none", "--dga-step-clip", "0", "--dga-score-ema", "0", "--no-dga-scale-by-lr"]
SCALED = ["--dga-step-scale", "spread", "--dga-lr", "0.5", "--dga-step-clip", "0", "--dga-score-ema", "0",
          "--no-dga-scale-by-lr"]
CONTROL = ["--dga-step-scale", "spread", "--dga-lr", "0.5", "--dga-step-clip", "1", "--dga-score-ema", "0.5",
           "--dga-scale-by-lr"]
VARIANTS = {
    "raw": ["--dga-alignment", "raw", *NO_CONTROL],
    "raw-rms": ["--dga-alignment", "raw", *SCALED],
    "adam-rms": ["--dga-alignment", "adam", *SCALED],
    "cosine-rms": ["--dga-alignment", "cosine", *SCALED],
    "raw-control": ["--dga-alignment", "raw", *CONTROL],
    "adam-control": ["--dga-alignment", "adam", *CONTROL],
    "cosine-control": ["--dga-alignment", "cosine", *CONTROL],
    # The default with each score shrunk by its signal-to-noise ratio (same probes: with 2 ranks,
    # 2 probe micro batches per source give each score a standard error).
    "adam-control-shrink": ["--dga-alignment", "adam", *CONTROL, "--dga-noise-shrink"],
    # Probe size against update frequency at the same probe cost: 4 micro batches per source
    # every 4 x T_r iterations instead of 1 every T_r.
    "adam-control-m4": ["--dga-alignment", "adam", *CONTROL, "--dga-probe-microbatches", "4", "--dga-update-interval", "40"],
}

# The models runs share: a 4 x 256 GPT on 128-token sequences, and a tiny one for smoke tests.
MODELS = {
    "small": ["--num-layers", "4", "--hidden-size", "256", "--num-attention-heads", "4", "--seq-length", "128"],
    "tiny": ["--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "32"],
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", required=True, help="prepared.json written by prepare.py")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--regime", default="plenty", choices=REGIMES)
    p.add_argument("--domains", default="sources", choices=["sources", "clusters"],
                   help="generic domains: the corpus sources, or the k-means clusters made by prepare.py --clusters")
    p.add_argument("--clusters-k", type=int, help="with --domains clusters: which clustering (default: the first)")
    p.add_argument("--base-distributions", action="store_true",
                   help="dga over the clusters' base distributions (prepare.py --bases)")
    p.add_argument("--variant", default="raw", choices=sorted(VARIANTS), help="dga methods: score and step variant")
    p.add_argument("--experiment", help="name of the group of runs in the report (default: the --domains value)")
    p.add_argument("--model", default="small", choices=sorted(MODELS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="run folder (metrics.jsonl, tb/, log.txt)")
    p.add_argument("--train-iters", type=int, default=300)
    p.add_argument("--stop-at", type=int,
                   help="train only up to this iteration of the --train-iters schedule and save a checkpoint; a "
                        "later call with a larger --stop-at continues from it (successive halving, headroom.py)")
    p.add_argument("--mixture", help="--method static: the fixed mixture, name=weight,... (unnamed domains get 0)")
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--global-batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--eval-iters", type=int, default=2)
    p.add_argument("--dga-update-interval", type=int,
                   help="default: pretrain's, which keeps the probes within --dga-probe-budget (at the default batch "
                   "and 6-7 domains: every 10 iterations on probes of 2 of 8 sequences for the first third of the "
                   "run, then every 40 with the step doubled; the tables before the headroom were made with 10)")
    p.add_argument("--dga-lr", type=float, default=1.0)
    p.add_argument("--dga-ema", type=float, default=0.5, help="EMA of the dga-ema method")
    p.add_argument("--domain-max-tokens", type=int, default=20_000, help="token-limited regime cap")
    p.add_argument("--specific-train-samples", type=int, default=32, help="few-specific regime")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--launcher", default="deepspeed", choices=["deepspeed", "torchrun"])
    p.add_argument("--extra", default="", help="more pretrain flags, space-separated")
    p.add_argument("--progress", action="store_true", help="show the iteration and validation lines on the console")
    return p.parse_args(argv)


def method_flags(method: str, a, prepared: Dict) -> List[str]:
    if method in ("uniform", "natural"):
        return ["--mixing", method]
    if method == "static":
        if not a.mixture:
            raise SystemExit("--method static needs --mixture name=weight,...")
        return ["--mixing", "static", "--mixture-weights", a.mixture]
    if method == "importance":
        if a.domains == "clusters":
            histogram = clustering(a, prepared)["histogram"]
        elif "sources_histogram" in prepared:
            histogram = prepared["sources_histogram"]
        else:
            raise SystemExit(f"{a.prepared} has no sources_histogram: run prepare.py with importance histograms")
        if a.regime == "few-specific":
            # Only the few training sequences may inform the weights: assign them at start-up.
            return ["--mixing", "importance", "--importance-clusters", os.path.dirname(histogram)]
        return ["--mixing", "importance", "--importance-histogram", histogram]
    ema = "0" if method == "dga" else str(a.dga_ema)
    interval = [] if a.dga_update_interval is None else ["--dga-update-interval", str(a.dga_update_interval)]
    # The variant's own interval, if any, comes later and wins.
    flags = ["--mixing", "dga", "--dga-ema", ema, "--dga-lr", str(a.dga_lr), *interval, *VARIANTS[a.variant]]
    if a.base_distributions:
        # A domain floor of 2 samples over the run: a tiny cluster in a large base is still sampled.
        floor = 2.0 / (a.train_iters * a.global_batch_size)
        flags += ["--dga-base-distributions", clustering(a, prepared)["bases"], "--dga-min-domain-weight", f"{floor:.6g}"]
    return flags


def clustering(a, prepared: Dict) -> Dict:
    """The clustering's manifest, histogram and (optional) bases chosen by --clusters-k."""
    entries = prepared.get("clusters")
    if not entries:
        if "clusters_manifest" not in prepared:
            raise SystemExit(f"{a.prepared} has no clustering: run prepare.py --clusters")
        entries = {"": {"manifest": prepared["clusters_manifest"], "histogram": prepared["clusters_histogram"]}}
    if a.clusters_k is None:
        return next(iter(entries.values()))
    entry = entries.get(str(a.clusters_k))
    if entry is None:
        raise SystemExit(f"{a.prepared} has no clustering with k = {a.clusters_k}: run prepare.py --clusters")
    return entry


def regime_flags(regime: str, a) -> List[str]:
    if regime == "token-limited":
        return ["--domain-max-tokens", str(a.domain_max_tokens)]
    if regime == "few-specific":
        return ["--specific-train-samples", str(a.specific_train_samples)]
    return []


def pretrain_args(a, prepared: Dict) -> List[str]:
    manifest = clustering(a, prepared)["manifest"] if a.domains == "clusters" else prepared["domains_manifest"]
    return [
        "--domains-manifest", manifest, *MODELS[a.model],
        "--micro-batch-size", str(a.micro_batch_size), "--global-batch-size", str(a.global_batch_size),
        "--train-iters", str(a.train_iters), "--lr", str(a.lr), "--min-lr", str(a.lr / 10),
        "--lr-warmup-iters", str(max(1, a.train_iters // 20)), "--lr-decay-style", "cosine",
        "--weight-decay", "0.1", "--seed", str(a.seed), "--split", "98,2,0",
        "--specific-data-path", prepared["specific"], "--specific-valid-data-path", prepared["heldout"],
        "--log-interval", "10", "--eval-interval", str(a.eval_interval), "--eval-iters", str(a.eval_iters),
        "--metrics-file", os.path.join(a.out, "metrics.jsonl"), "--tensorboard-dir", os.path.join(a.out, "tb"),
        *method_flags(a.method, a, prepared), *regime_flags(a.regime, a), *stop_flags(a), *a.extra.split(),
    ]


def stop_at(a) -> int:
    return a.train_iters if a.stop_at is None else min(a.stop_at, a.train_iters)


def stop_flags(a) -> List[str]:
    """With --stop-at: stop there with a checkpoint, and continue from the last one."""
    if a.stop_at is None:
        return []
    checkpoints = os.path.join(a.out, "checkpoints")
    flags = ["--save", checkpoints, "--load", checkpoints]
    if stop_at(a) < a.train_iters:
        flags += ["--exit-interval", str(stop_at(a))]
    return flags


PROGRESS = re.compile(r"^\s*(\[[\d: -]+\]\s*)?(iteration\s+\d+/|validation loss at|stopping at|saved checkpoint|"
                      r"training \d+ iterations)")


def run_showing_progress(command: List[str], log, name: str) -> subprocess.CompletedProcess:
    """Run `command` with its output in `log`, and its progress lines on the console too."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in process.stdout:
        log.write(line)
        if PROGRESS.match(line):
            shown = re.sub(r"\s+\|", " |", line.strip())
            print(f"[{name}] {shown[:160]}", flush=True)
    return subprocess.CompletedProcess(command, process.wait())


def label(a) -> str:
    """How the report names the run's method: the method, with its DGA variant, bases and hand-set interval."""
    name = a.method
    if a.method == "static":
        name += f" {a.mixture}"
    if a.method.startswith("dga"):
        name += "" if a.variant == "raw" else f" {a.variant}"
        name += " (bases)" if a.base_distributions else ""
        # A hand-set interval is another schedule than pretrain's derived one: kept apart in the tables.
        name += f" (every {a.dga_update_interval})" if a.dga_update_interval is not None else ""
    return name


def finished(out: str, train_iters: int, until: int) -> bool:
    """Whether the run in `out` reached iteration `until` of its `train_iters` schedule."""
    path = os.path.join(out, "run.json")
    if not os.path.exists(path):
        return False
    with open(path) as f:
        info = json.load(f)
    return info.get("train_iters") == train_iters and info.get("iterations_done", train_iters) >= until


def launcher_command(a, args: List[str]) -> List[str]:
    if a.launcher == "deepspeed":
        return [shutil.which("deepspeed") or os.path.join(os.path.dirname(sys.executable), "deepspeed"),
                "--num_gpus", str(a.nproc), "--master_port", str(29500 + os.getpid() % 1000),
                "--module", "megatron_dga.pretrain", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(a.nproc),
            "--master_port", str(29500 + os.getpid() % 1000), "-m", "megatron_dga.pretrain", *args]


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    with open(a.prepared) as f:
        prepared = json.load(f)
    until = stop_at(a)
    if finished(a.out, a.train_iters, until):
        print(f"{a.out}: already done", flush=True)
        return 0
    os.makedirs(a.out, exist_ok=True)
    continuing = a.stop_at is not None and os.path.exists(os.path.join(a.out, "checkpoints"))
    previous_seconds = 0.0
    if continuing and os.path.exists(os.path.join(a.out, "run.json")):
        with open(os.path.join(a.out, "run.json")) as f:
            previous_seconds = json.load(f).get("wall_seconds", 0.0)
    if not continuing:
        shutil.rmtree(os.path.join(a.out, "tb"), ignore_errors=True)  # a fresh run, not appended to
    command = launcher_command(a, pretrain_args(a, prepared))
    print("+", " ".join(command), flush=True)
    start = time.time()
    with open(os.path.join(a.out, "log.txt"), "a" if continuing else "w") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT) if not a.progress \
            else run_showing_progress(command, log, a.method)
    if result.returncode != 0:
        print(f"{a.out}: training failed ({result.returncode}); see {a.out}/log.txt", flush=True)
        return result.returncode
    info = {"method": a.method, "regime": a.regime, "domains": a.domains, "seed": a.seed,
            "experiment": a.experiment or a.domains,
            "label": label(a),
            "train_iters": a.train_iters, "iterations_done": until,
            "wall_seconds": previous_seconds + time.time() - start, "run_args": argv,
            "command": command}
    write_json(os.path.join(a.out, "run.json"), info)  # written last: it marks the run finished
    if a.stop_at is not None and until == a.train_iters:
        shutil.rmtree(os.path.join(a.out, "checkpoints"), ignore_errors=True)  # the halving's: no longer needed
    print(f"{a.out}: done to iteration {until} in {info['wall_seconds']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
