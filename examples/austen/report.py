"""Tables and plots of the Austen experiments, from the runs' metrics files.

    python examples/austen/report.py --work-dir runs/austen --output docs/results.md [--notes notes.md]

For every group of runs (domains x regime) and method: the held-out Austen loss (the novel
never trained on; `lm loss validation/specific`) at the end and at its best, averaged over
seeds; the final weights; how many epochs the most sampled domain went through; wall time.
Plots of every seed go next to the report (`<output stem>/`). --notes inserts hand-written findings.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import statistics
import sys
from collections import defaultdict
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from megatron_dga.monitoring.plots import plot_losses, plot_weights  # noqa: E402
from megatron_dga.monitoring.runs import Run, read_run  # noqa: E402

from run import VARIANTS  # noqa: E402
from unigram import unigram_baseline  # noqa: E402

BASE_METHODS = ["uniform", "natural", "static", "importance", "dga", "dga-ema"]
REGIME_ORDER = ["plenty", "token-limited", "few-specific"]
# Groups of runs (run.json "experiment"), in the order the report shows them.
EXPERIMENT_ORDER = ["sources", "clusters", "variants", "clusters64", "clusters256", "scale",
                    "headroom-novels_austen", "headroom-docs_python", "headroom-code_go", "headroom-drama_shakespeare"]
HELDOUT = "lm loss validation/specific"


def label_rank(label: str):
    """Base methods first, each followed by its DGA variants (VARIANTS order), bases last."""
    method, _, rest = label.partition(" ")
    words = rest.split()
    variant = words[0] if words and not words[0].startswith("(") else "raw"  # "(bases)", "(every 10)": raw
    return (BASE_METHODS.index(method) if method in BASE_METHODS else len(BASE_METHODS), "(bases)" in label,
            list(VARIANTS).index(variant) if variant in VARIANTS else len(VARIANTS), label)


def group_rank(key):
    experiment, regime = key
    order = EXPERIMENT_ORDER.index(experiment) if experiment in EXPERIMENT_ORDER else len(EXPERIMENT_ORDER)
    return order, experiment, REGIME_ORDER.index(regime) if regime in REGIME_ORDER else len(REGIME_ORDER)


def load_runs(work: str) -> Dict[tuple, List[dict]]:
    groups = defaultdict(list)
    for info_path in sorted(glob.glob(os.path.join(work, "runs", "*", "*", "*", "seed*", "run.json"))):
        with open(info_path) as f:
            info = json.load(f)
        if info.get("iterations_done", info["train_iters"]) < info["train_iters"]:
            continue  # a headroom candidate stopped early: in the headroom section, not the tables
        info.setdefault("label", info["method"])
        info.setdefault("experiment", info["domains"])
        folder = os.path.dirname(info_path)
        # A method that does not read the specific set's training sequences (uniform, natural)
        # is the same run in the plenty and few-specific regimes: run_all.sh links one folder to
        # the other, and the report shows it under both.
        regime = os.path.basename(os.path.dirname(os.path.dirname(folder)))
        if regime != info["regime"]:
            info["label"] += f" (= {info['regime']} run)"
        info["run"] = read_run(os.path.join(folder, "metrics.jsonl"), info["label"])
        info["folder"] = folder
        groups[(info["experiment"], regime)].append(info)
    return groups


def mean_sd(values: List[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def top_weights(run: Run, n: int = 3) -> str:
    weights = {name: series[-1][1] for name, series in run.group("data-mixture").items()}
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(weights.items(), key=lambda kv: -kv[1])[:n])


def max_epochs(run: Run) -> str:
    epochs = {name: series[-1][1] for name, series in run.group("domain-epochs").items()}
    name = max(epochs, key=epochs.get)
    return f"{epochs[name]:.1f} ({name})"


def domains_sampled(run: Run) -> str:
    """How many domains gave at least one training sequence, of all."""
    tokens = {name: series[-1][1] for name, series in run.group("domain-tokens").items()}
    return f"{sum(1 for v in tokens.values() if v > 0)} / {len(tokens)}"


def noise(run: Run) -> str:
    """Median over updates of the score's standard error relative to its spread over sources."""
    ratios = [stderr / spread for (_, stderr), (_, spread) in
              zip(run.series.get("dga-noise/stderr-rms", []), run.series.get("dga-noise/score-rms", []))
              if spread > 0]
    return f"{statistics.median(ratios):.2f}" if ratios else ""


def table(runs: List[dict]) -> List[str]:
    lines = ["| method | held-out loss, final | final, per seed | held-out loss, best | final weights (first seed) | "
             "most epochs of a domain | domains sampled | probe noise | wall time |",
             "|---|---:|---:|---:|---|---|---:|---:|---:|"]
    by_label = defaultdict(list)
    for info in runs:
        by_label[info["label"]].append(info)
    for label in sorted(by_label, key=label_rank):
        infos = sorted(by_label[label], key=lambda i: i["seed"])
        final = [i["run"].last(HELDOUT) for i in infos]
        best = [min(v for _, v in i["run"].series[HELDOUT]) for i in infos]
        wall = statistics.mean(i["wall_seconds"] for i in infos)
        per_seed = " / ".join(f"{v:.3f}" for v in final)
        first = infos[0]["run"]
        lines.append(f"| {label} | {mean_sd(final)} | {per_seed} | {mean_sd(best)} | {top_weights(first)} | "
                     f"{max_epochs(first)} | {domains_sampled(first)} | {noise(first)} | {wall:.0f} s |")
    return lines


FINAL_EVALUATIONS = 3  # the end of a run: the mean of its last evaluations (one is a small, noisy sample)


def finished_runs_by_seed(folder: str) -> Dict[int, Run]:
    """{seed: run} of the finished runs in `folder`/seed*/ (a search's candidate stopped early is not one)."""
    runs = {}
    for info_path in sorted(glob.glob(os.path.join(folder, "seed*", "run.json"))):
        with open(info_path) as f:
            info = json.load(f)
        if info.get("iterations_done", info["train_iters"]) == info["train_iters"]:
            seed = int(os.path.basename(os.path.dirname(info_path))[len("seed"):])
            runs[seed] = read_run(os.path.join(os.path.dirname(info_path), "metrics.jsonl"), "")
    return runs


def final_losses_by_seed(folder: str) -> Dict[int, float]:
    """{seed: held-out loss at the end of its run} for the finished runs in `folder`/seed*/:
    the mean of the run's last FINAL_EVALUATIONS evaluations."""
    return {seed: statistics.mean(v for _, v in run.series[HELDOUT][-FINAL_EVALUATIONS:])
            for seed, run in finished_runs_by_seed(folder).items()}


def final_losses(folder: str) -> List[float]:
    """The final held-out loss of each seed's finished run in `folder`, in seed order."""
    return [loss for _, loss in sorted(final_losses_by_seed(folder).items())]


def heldout_by_seed(folder: str) -> Dict[int, Dict[int, float]]:
    """{seed: {iteration: held-out loss}} of the finished runs in `folder`/seed*/."""
    return {seed: dict(run.series[HELDOUT]) for seed, run in finished_runs_by_seed(folder).items()}


def gain_along_the_run(work: str) -> List[str]:
    """The held-out gain over uniform at each evaluation, (uniform - method), averaged over every
    headroom target and seed of the plenty regime where the method has a finished run beside uniform's;
    methods with fewer such runs than the most complete are marked with their count."""
    gains = defaultdict(lambda: defaultdict(list))  # method -> iteration -> gains
    runs = defaultdict(int)
    for base in sorted(glob.glob(os.path.join(work, "runs", "headroom-*", "plenty"))):
        uniform = heldout_by_seed(os.path.join(base, "uniform"))
        for folder in sorted(glob.glob(os.path.join(base, "dga*"))):
            method = os.path.basename(folder)
            for seed, series in heldout_by_seed(folder).items():
                if seed not in uniform:
                    continue
                runs[method] += 1
                for iteration, loss in series.items():
                    if iteration in uniform[seed]:
                        gains[method][iteration].append(uniform[seed][iteration] - loss)
    if not gains:
        return []
    iterations = sorted({i for by_iteration in gains.values() for i in by_iteration})
    most = max(runs.values())
    lines = ["| method (runs) | " + " | ".join(str(i) for i in iterations) + " |",
             "|---|" + "---:|" * len(iterations)]
    for method in sorted(gains):
        cells = [f"{statistics.mean(gains[method][i]):.3f}" if gains[method][i] else "" for i in iterations]
        count = f" ({runs[method]})" if runs[method] < most else f" ({most})"
        lines.append(f"| {method}{count} | " + " | ".join(cells) + " |")
    return ["### Gain over uniform along the run", "",
            "Held-out loss of uniform minus the method's, at each evaluation (single evaluations, each noisy by "
            "about 0.02 nats), averaged over the plenty runs of every target and seed the method has:", ""] \
        + lines + [""]


def headroom_section(work: str) -> List[str]:
    """Per target: uniform, the best fixed mixture found by headroom.py, and each DGA form, with
    the fraction of the available gain each captures, (uniform - method) / (uniform - best fixed),
    from the means over seeds."""
    searches = sorted(glob.glob(os.path.join(work, "headroom", "*-seed*.json")))
    if not searches:
        return []
    lines = ["## Headroom: the best fixed mixture of each target, and how much of it DGA captures", "",
             "| target | regime | uniform | best fixed mixture (searched on seed 1) | best fixed | method | "
             "held-out loss | captured | captured, per seed | search cost |",
             "|---|---|---:|---|---:|---|---:|---:|---:|---:|"]
    for path in searches:
        with open(path) as f:
            search = json.load(f)
        experiment, winner = search["experiment"], search.get("winner")
        if not winner:
            continue
        base = os.path.join(work, "runs", experiment)
        uniform_by_seed = final_losses_by_seed(os.path.join(base, "plenty", "uniform"))
        best_by_seed = uniform_by_seed if winner == "uniform" else \
            final_losses_by_seed(os.path.join(base, "plenty", f"static-{winner}"))
        uniform, best = list(uniform_by_seed.values()), list(best_by_seed.values())
        weights = ", ".join(f"{n} {w:.2f}" for n, w in sorted(search["candidates"][winner]["weights"].items(),
                                                                key=lambda kv: -kv[1]))
        full_runs = search["iterations_trained"] / search["rungs"][-1]
        cost = f"{full_runs:.1f} runs, {search['seconds'] / 3600:.1f} h"
        if not uniform or not best:
            continue
        u, b = statistics.mean(uniform), statistics.mean(best)
        for regime in ("plenty", "few-specific"):
            for folder in sorted(glob.glob(os.path.join(base, regime, "dga*"))):
                by_seed = final_losses_by_seed(folder)
                if not by_seed:
                    continue
                losses = list(by_seed.values())
                d = statistics.mean(losses)
                captured = f"{(u - d) / (u - b):.2f}" if u - b > 1e-9 else "(no headroom)"
                per_seed = " / ".join(
                    f"{(uniform_by_seed[s] - loss) / (uniform_by_seed[s] - best_by_seed[s]):.2f}"
                    for s, loss in sorted(by_seed.items())
                    if s in uniform_by_seed and s in best_by_seed and uniform_by_seed[s] - best_by_seed[s] > 1e-9)
                method = os.path.basename(folder)
                lines.append(f"| {experiment.replace('headroom-', '')} | {regime} | {mean_sd(uniform)} | {weights} | "
                             f"{mean_sd(best)} | {method} | {mean_sd(losses)} | {captured} | {per_seed} | {cost} |")
    lines += ["", f"Held-out loss at the end of the run (the mean of its last {FINAL_EVALUATIONS} evaluations), "
              "mean ± standard deviation over seeds (seeds 1 and 2; a figure without ± is seed 1 alone). The "
              "best fixed mixture is searched on seed 1 by successive halving (`examples/austen/headroom.py`); its "
              "seed-2 run is the honest figure, since the search chose it on seed 1's held-out loss. *Captured* is "
              "computed from the means over seeds; *captured, per seed* from each seed's own uniform and best-fixed "
              "runs (seed 1 / seed 2). *Search cost*: "
              "the iterations its candidates trained, in full runs, and their wall time.", ""]
    return lines + gain_along_the_run(work)


def prepared_of(info: dict) -> str:
    args = info.get("run_args", [])
    return args[args.index("--prepared") + 1] if "--prepared" in args else ""


def reproducible_args(info: dict) -> List[str]:
    """run.py's flags of a run, with DGA's update interval written out where run.py left it to its
    default of the day (a fixed 10, before the default followed --dga-probe-budget): the interval
    the launched command had (its last, as the last flag wins)."""
    args, command = list(info.get("run_args", [])), info.get("command", [])
    if "--dga-update-interval" in command and not any("--dga-update-interval" in a for a in args):
        last = max(i for i, flag in enumerate(command) if flag == "--dga-update-interval")
        args += ["--dga-update-interval", command[last + 1]]
    return args


def commands(work: str, ordered) -> List[str]:
    """The exact commands, with the work directory written as $WORK."""
    work = os.path.abspath(work)

    def shown(args: List[str]) -> str:
        return " ".join(shlex.quote(a) for a in args).replace(work, "$WORK")

    prepared_files = sorted({prepared_of(info) for _, runs in ordered for info in runs} - {""}) \
        or [os.path.join(work, "prepared.json")]
    lines = ["## Commands", "", f"`WORK={work}`. Data:", ""]
    for path in prepared_files:
        prepare_args = None
        if os.path.exists(path):
            with open(path) as f:
                prepare_args = json.load(f).get("prepare_args")
        lines.append(f"- `python examples/austen/prepare.py {shown(prepare_args)}`" if prepare_args is not None
                     else "- `python examples/austen/prepare.py` as in `examples/austen/run_all.sh`")
    lines += ["", "Each run:", ""]
    for _, runs in ordered:
        for info in sorted(runs, key=lambda i: (label_rank(i["label"]), i["seed"])):
            lines.append(f"- `python examples/austen/run.py {shown(reproducible_args(info))}`")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--notes", help="markdown inserted after the title")
    a = p.parse_args(argv)
    groups = load_runs(a.work_dir)
    if not groups:
        p.error(f"no finished runs under {a.work_dir}/runs")
    stem = os.path.splitext(a.output)[0]
    plots_dir = stem
    out = ["# Results: specialising to Jane Austen", ""]
    if a.notes:
        with open(a.notes) as f:
            out += [f.read().rstrip(), ""]
    out += ["Generated by `examples/austen/report.py` from the runs of `examples/austen/run_all.sh`. The",
            "held-out loss is on target text never seen in training (`lm loss validation/specific`; for Austen a",
            "novel); mean ± standard deviation over seeds. *Domains sampled*: domains that gave at least one",
            "training sequence. *Probe noise*: median over updates of the RMS standard error of the alignment",
            "scores over their RMS spread across sources (1: the differences between sources are as large as",
            "the measurement error), where the probes allow it.", ""]
    out += headroom_section(a.work_dir)
    ordered = sorted(groups.items(), key=lambda kv: group_rank(kv[0]))
    for (experiment, regime), runs in ordered:
        seeds = sorted({i["seed"] for i in runs})
        title = f"{regime} regime, {experiment} as domains" if experiment in ("sources", "clusters") \
            else f"{experiment}: {regime} regime"
        out += [f"## {title}", "",
                f"Seeds: {', '.join(map(str, seeds))}; {runs[0]['train_iters']} iterations.", ""]
        baseline = unigram_baseline(prepared_of(runs[0]))
        if baseline is not None:
            out += [f"Unigram baseline (add-one smoothed unigram of the specific set, on the held-out set): "
                    f"{baseline:.3f}.", ""]
        out += table(runs) + [""]
        for seed in seeds:
            out += [f"Seed {seed}:", ""] if len(seeds) > 1 else []
            same_seed = sorted((i for i in runs if i["seed"] == seed), key=lambda i: label_rank(i["label"]))
            name = f"{experiment}-{regime}" + (f"-seed{seed}" if seed != seeds[0] else "")
            losses = plot_losses([i["run"] for i in same_seed], os.path.join(plots_dir, f"{name}-losses.png"),
                                 ["specific"])
            weights = plot_weights([i["run"] for i in same_seed if i["method"] in ("importance", "dga", "dga-ema")],
                                   os.path.join(plots_dir, f"{name}-weights.png"))
            for path in filter(None, (losses, weights)):
                relative = os.path.relpath(path, os.path.dirname(os.path.abspath(a.output)))
                out += [f"![{os.path.basename(path)}]({relative})", ""]
    out += commands(a.work_dir, ordered)
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    with open(a.output, "w") as f:
        f.write("\n".join(out) + "\n")
    print(a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
