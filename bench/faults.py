"""Reliability figures for the README: how fast a job fails when a rank dies or hangs, and what
each bad input says.

    python bench/faults.py

- dead rank: a DP = 2 run under torchrun and under the deepspeed launcher; SIGKILL on rank 1
  after iteration 2; seconds until the launcher exits (non-zero);
- hung rank: SIGSTOP on rank 1 with --distributed-timeout-minutes 0.1 (6 s); seconds until the
  launcher exits, and the message of the waiting rank;
- bad inputs: each one given to `python -m megatron_dga.pretrain`, with the first line of its
  error.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from pretrain_helpers import (  # noqa: E402
    EOD,
    SMALL_MODEL,
    deepspeed_command,
    free_port,
    make_domains,
    rank_processes,
    run,
    seconds_to_exit,
    start,
    synthetic_documents,
    torchrun_command,
    wait_for_iteration,
    write_domain,
)


def train_args(manifest, run_dir, extra=()):
    return ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "100000", "--split", "90,10,0", "--eval-interval", "100000", "--log-interval", "1",
            "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), *extra]


def dead_rank(manifest, work, launcher_kind):
    run_dir = os.path.join(work, f"dead-{launcher_kind}")
    args = train_args(manifest, run_dir)
    command = torchrun_command(2, args) if launcher_kind == "torchrun" else \
        deepspeed_command(args, ["--num_gpus", "2", "--master_port", str(free_port())])
    launcher = start(command)
    wait_for_iteration(os.path.join(run_dir, "metrics.jsonl"), 2, launcher)
    rank_processes(launcher, 2)[1].send_signal(signal.SIGKILL)
    seconds = seconds_to_exit(launcher, 120)
    return seconds, launcher.returncode


def hung_rank(manifest, work):
    run_dir = os.path.join(work, "hung")
    launcher = start(torchrun_command(2, train_args(manifest, run_dir, ["--distributed-timeout-minutes", "0.1"])))
    wait_for_iteration(os.path.join(run_dir, "metrics.jsonl"), 2, launcher)
    ranks = rank_processes(launcher, 2)
    ranks[1].send_signal(signal.SIGSTOP)
    try:
        seconds = seconds_to_exit(launcher, 300)
    finally:
        for process in ranks.values():
            try:
                process.kill()
            except Exception:
                pass
    _, stderr = launcher.communicate()
    message = next((line for line in stderr.splitlines() if line.startswith("rank ")), "")
    return seconds, launcher.returncode, message


def bad_inputs(work):
    """(what, command flags, first error line) for every bad input."""
    cases = []

    def fresh(name):
        directory = os.path.join(work, "bad", name)
        return directory, make_domains(directory)

    def error(args):
        result = run(torchrun_command(1, [*SMALL_MODEL, "--train-iters", "3", "--split", "100,0,0", *args]),
                     expect_ok=False)
        lines = [line for line in result.stderr.splitlines() if line.startswith(("error", "rank"))]
        return result.returncode, (lines[0] if lines else (result.stderr.strip().splitlines() or ["(none)"])[-1])

    d, manifest = fresh("truncated")
    prefix = os.path.join(d, "dom1_text_document")
    with open(prefix + ".bin", "r+b") as f:
        f.truncate(os.path.getsize(prefix + ".bin") - 10)
    cases.append(("a truncated .bin", *error(["--domains-manifest", manifest])))

    d, manifest = fresh("foreign-idx")
    shutil.copy(os.path.join(d, "dom0_text_document.idx"), os.path.join(d, "dom2_text_document.idx"))
    cases.append(("an .idx that does not match its .bin", *error(["--domains-manifest", manifest])))

    d, manifest = fresh("token")
    documents = synthetic_documents(np.random.default_rng(0), (0, 100), 20)
    for document in documents:
        document[:-1] = 300
    write_domain(os.path.join(d, "dom1_text_document"), documents)
    cases.append(("a token id at or above the vocabulary", *error(["--domains-manifest", manifest,
                                                                   "--micro-batch-size", "4"])))

    d, manifest = fresh("tokenizer")
    stamp = {"source": {"tokenizer": {"type": "GPT2BPETokenizer", "vocab_size": 50257, "eod": 50256}}}
    with open(os.path.join(d, "dom1_text_document.source.json"), "w") as f:
        json.dump(stamp, f)
    cases.append(("a manifest whose tokenizer differs from the dataset's", *error(["--domains-manifest", manifest])))

    d, manifest = fresh("small")
    write_domain(os.path.join(d, "dom1_text_document"), [np.array([1, 2, 3, EOD])])
    cases.append(("a domain with fewer tokens than one sequence", *error(["--domains-manifest", manifest])))

    d, manifest = fresh("empty-specific")
    write_domain(os.path.join(d, "specific_text_document"), [])
    cases.append(("an empty specific set", *error(["--domains-manifest", manifest, "--mixing", "dga",
                                                   "--specific-data-path", os.path.join(d, "specific_text_document")])))

    d, _ = fresh("weights")
    cases.append(("a --data-path weight that is not a number",
                  *error(["--data-path", "0.5", os.path.join(d, "dom0_text_document"), "x",
                          os.path.join(d, "dom1_text_document"), "--vocab-size", "256"])))

    d, manifest = fresh("disk")
    checkpoints = os.path.join(d, "checkpoints")
    run(torchrun_command(1, ["--domains-manifest", manifest, *SMALL_MODEL, "--train-iters", "2", "--split",
                             "100,0,0", "--save", checkpoints]))
    result = run(["bash", "-c", 'ulimit -f 64 && exec "$@"', "_",
                  *torchrun_command(1, ["--domains-manifest", manifest, *SMALL_MODEL, "--train-iters", "4",
                                        "--split", "100,0,0", "--save", checkpoints, "--load", checkpoints])],
                 expect_ok=False)
    line = next((x for x in result.stderr.splitlines() if "saving checkpoint" in x), result.stderr[-300:])
    cases.append(("a full disk during a save (ulimit -f 64)", result.returncode, line))
    return cases


def main() -> int:
    work = tempfile.mkdtemp(prefix="faults-")
    try:
        manifest = make_domains(os.path.join(work, "data"))
        for kind in ("torchrun", "deepspeed"):
            seconds, status = dead_rank(manifest, work, kind)
            print(f"dead rank ({kind}): job exited with status {status} after {seconds:.1f} s")
        seconds, status, message = hung_rank(manifest, work)
        print(f"hung rank (SIGSTOP, --distributed-timeout-minutes 0.1 = 6 s): job exited with status {status} "
              f"after {seconds:.1f} s")
        print(f"  {message}")
        print("bad inputs:")
        for what, status, message in bad_inputs(work):
            print(f"- {what}: status {status}: {message.replace(work, '$TMP')}")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
