"""The best fixed mixture for a target, found by successive halving: the headroom DGA is judged by.

    python examples/austen/headroom.py --prepared W/austen-v2048/prepared.json --work-dir W \\
        --experiment headroom-austen --seed 1 --rungs 150,300,600 -- --model small --train-iters 600 --eval-interval 50

A learned mixture is worth its cost only if it gets most of what the best fixed mixture over the
same domains gets. This finds a good fixed mixture with a budget of a few full runs, honestly:
every candidate is a real training run of the full schedule (`run.py --method static`), scored
by its held-out loss, and stopped early at a rung when it falls behind (each run saves a
checkpoint at its rung and the survivors continue from it, so the survivors' runs are exactly
the uninterrupted ones):

 1. screen: uniform and every single domain, to the first rung;
 2. mixtures of the best single domains (pairs, thirds, the two best with 0.1 spread over the
    rest, the better half uniform), plus any --candidate, to the first rung;
 3. successive halving: at each next rung the best third (at least 2) continue;
 4. local search: after the first rung, the leader's weights moved 0.15 toward each of the
    next best single domains; these run to the first rung and join the halving if they rank
    among the kept;
 5. the winner is the candidate with the lowest held-out loss at the last rung (uniform
    included: then there is no headroom).

The held-out set scores the candidates, so the winner's loss on the searched seed is biased
low by the choice; the honest figure is the winner's run on another seed (run_all.sh runs it).

Uniform always runs to the end (it is every comparison's baseline). Everything is written to
`<work-dir>/runs/<experiment>/plenty/static-<name>/seed<seed>/` (the report reads those) and
the search to `<work-dir>/headroom/<experiment>-seed<seed>.json`: candidates, their loss at
every rung they reached, the iterations and seconds each cost, and the winner.

Two helpers for run_all.sh: `headroom.py winner SEARCH.json` prints the winner's label and
mixture, `headroom.py mixture RUN_DIR` a run's final mixture (name=weight,...).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, REPO)

from megatron_dga.files import write_json  # noqa: E402
from megatron_dga.monitoring.runs import read_run  # noqa: E402

HELDOUT = "lm loss validation/specific"
LOCAL_STEP = 0.15


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prepared", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--experiment", required=True, help="the group of runs in the report")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rungs", default="150,300,600",
                   help="iterations at which candidates are compared; the last is --train-iters")
    p.add_argument("--keep", type=float, default=1 / 3, help="fraction of candidates kept at each rung")
    p.add_argument("--local", type=int, default=3, help="local-search candidates around the leader")
    p.add_argument("--candidate", action="append", default=[],
                   help="an extra mixture to try, name=weight,... (for example a learned mixture)")
    p.add_argument("run_args", nargs=argparse.REMAINDER, help="after --: run.py flags shared by every run")
    a = p.parse_args(argv)
    a.run_args = [x for x in a.run_args if x != "--"]
    a.rungs = [int(r) for r in a.rungs.split(",")]
    return a


def domain_names(prepared: Dict) -> List[str]:
    with open(prepared["domains_manifest"]) as f:
        return [d["name"] for d in json.load(f)["domains"]]


def spec(weights: Dict[str, float]) -> str:
    """name=weight,... with weights rounded to 3 decimals, domains in a fixed order."""
    return ",".join(f"{n}={w:.3g}" for n, w in sorted(weights.items()) if w > 0)


def normalised(weights: Dict[str, float]) -> Dict[str, float]:
    total = sum(weights.values())
    return {n: w / total for n, w in weights.items() if w > 0}


def label_of(weights: Dict[str, float], names: List[str]) -> str:
    if len(weights) == len(names) and len(set(round(w, 6) for w in weights.values())) == 1:
        return "uniform"
    shown = [(n, round(100 * w)) for n, w in sorted(weights.items(), key=lambda kv: -kv[1]) if round(100 * w) >= 1]
    return "+".join(f"{n}{p}" for n, p in shown) + ("+rest" if len(shown) < len(weights) else "")


class Search:
    def __init__(self, a, prepared: Dict):
        self.a, self.prepared = a, prepared
        self.names = domain_names(prepared)
        self.train_iters = a.rungs[-1]
        self.candidates: Dict[str, Dict] = {}  # label -> {"weights", "losses": {rung: loss}, ...}
        self.path = os.path.join(a.work_dir, "headroom", f"{a.experiment}-seed{a.seed}.json")

    def folder(self, label: str) -> str:
        method = "uniform" if label == "uniform" else f"static-{label}"
        return os.path.join(self.a.work_dir, "runs", self.a.experiment, "plenty", method, f"seed{self.a.seed}")

    def add(self, weights: Dict[str, float], origin: str) -> Optional[str]:
        weights = normalised(weights)
        label = label_of(weights, self.names)
        if label in self.candidates:
            return None
        self.candidates[label] = {"weights": weights, "origin": origin, "losses": {}, "seconds": 0.0}
        return label

    def train(self, label: str, rung: int) -> float:
        """Run (or continue) a candidate to `rung`; its held-out loss there."""
        c = self.candidates[label]
        out = self.folder(label)
        method = ["--method", "uniform"] if label == "uniform" else ["--method", "static", "--mixture",
                                                                      spec(c["weights"])]
        command = [sys.executable, os.path.join(HERE, "run.py"), "--prepared", self.a.prepared,
                   "--experiment", self.a.experiment, "--regime", "plenty", "--seed", str(self.a.seed),
                   "--out", out, *method, "--stop-at", str(rung), *self.a.run_args]
        if "--train-iters" not in self.a.run_args:
            command += ["--train-iters", str(self.train_iters)]
        print("+", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
        run = read_run(os.path.join(out, "metrics.jsonl"), label)
        losses = [(it, v) for it, v in run.series[HELDOUT] if it <= rung]
        if not losses or losses[-1][0] != rung:
            raise SystemExit(f"{out}: no held-out evaluation at iteration {rung}: make --eval-interval divide "
                             f"every rung")
        with open(os.path.join(out, "run.json")) as f:
            info = json.load(f)
        c["seconds"] = info["wall_seconds"]
        c["iterations"] = info.get("iterations_done", info["train_iters"])
        c["losses"][str(rung)] = losses[-1][1]
        self.save()
        return losses[-1][1]

    def ranked(self, rung: int) -> List[str]:
        at = [label for label, c in self.candidates.items() if str(rung) in c["losses"]]
        return sorted(at, key=lambda label: self.candidates[label]["losses"][str(rung)])

    def save(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_json(self.path, {
            "experiment": self.a.experiment, "seed": self.a.seed, "rungs": self.a.rungs, "domains": self.names,
            "candidates": self.candidates,
            "iterations_trained": sum(c.get("iterations", 0) for c in self.candidates.values()),
            "seconds": sum(c["seconds"] for c in self.candidates.values()),
            "winner": getattr(self, "winner", None),
            "run_args": self.a.run_args,
        })

    def run(self) -> str:
        a, first = self.a, self.a.rungs[0]
        self.add({n: 1.0 for n in self.names}, "uniform")
        for n in self.names:
            self.add({n: 1.0}, "single domain")
        for label in list(self.candidates):
            self.train(label, first)
        singles = [label for label in self.ranked(first) if len(self.candidates[label]["weights"]) == 1]
        best = [next(iter(self.candidates[label]["weights"])) for label in singles]
        d1, d2, d3 = best[:3]
        rest = [n for n in self.names if n not in (d1, d2)]
        mixtures = [
            ({d1: 0.5, d2: 0.5}, "best two"),
            ({d1: 1, d2: 1, d3: 1}, "best three"),
            ({d1: 0.45, d2: 0.45, **{n: 0.1 / len(rest) for n in rest}}, "best two, 0.1 over the rest"),
            ({n: 1.0 for n in best[: math.ceil(len(best) / 2)]}, "better half"),
        ]
        for text in a.candidate:
            mixtures.append(({k: float(v) for k, v in (item.split("=") for item in text.split(","))}, "given"))
        for weights, origin in mixtures:
            label = self.add(weights, origin)
            if label:
                self.train(label, first)
        for previous, rung in zip(a.rungs, a.rungs[1:]):
            ranked = self.ranked(previous)
            keep = ranked[: max(2, math.ceil(a.keep * len(ranked)))]
            if "uniform" not in keep:
                keep.append("uniform")
            if previous == first and a.local:
                leader = self.candidates[keep[0]]["weights"]
                others = [n for n in best if leader.get(n, 0) < 0.5][: a.local]
                for n in others:
                    moved = {m: (1 - LOCAL_STEP) * leader.get(m, 0) + (LOCAL_STEP if m == n else 0) for m in self.names}
                    label = self.add(moved, f"local: {keep[0]} moved toward {n}")
                    if label:
                        self.train(label, previous)
                        ranked_now = self.ranked(previous)
                        if ranked_now.index(label) < len(keep):
                            keep.append(label)
            for label in keep:
                self.train(label, rung)
        self.winner = self.ranked(a.rungs[-1])[0]
        self.save()
        c = self.candidates[self.winner]
        print(f"best fixed mixture: {self.winner} ({spec(c['weights'])}), held-out {c['losses'][str(a.rungs[-1])]:.3f}; "
              f"uniform {self.candidates['uniform']['losses'][str(a.rungs[-1])]:.3f}", flush=True)
        return self.winner


def final_mixture(run_dir: str) -> Dict[str, float]:
    run = read_run(os.path.join(run_dir, "metrics.jsonl"), run_dir)
    return {name: series[-1][1] for name, series in run.group("data-mixture").items()}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["winner"]:
        with open(argv[1]) as f:
            search = json.load(f)
        print(search["winner"], spec(search["candidates"][search["winner"]]["weights"]))
        return 0
    if argv[:1] == ["mixture"]:
        print(spec(final_mixture(argv[1])))
        return 0
    a = parse_args(argv)
    with open(a.prepared) as f:
        prepared = json.load(f)
    Search(a, prepared).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
