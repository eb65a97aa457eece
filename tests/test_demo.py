"""The demo pipeline, shrunk: a tiny corpus made here, a tiny model, a few iterations, both
runs on 2 ranks through the deepspeed launcher. Its outputs hold the named series."""

import json
import os
import random
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from megatron_dga.monitoring.runs import read_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("the a of to and in that was her his she he it for had not as with be you at him my "
         "which by on have all this so but from were they no said could would been very mrs miss").split()


def sentences(rng, n):
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))).capitalize() + "." for _ in range(n))


def write_jsonl(path, docs):
    with open(path, "w") as f:
        for text, src in docs:
            f.write(json.dumps({"text": text, "src": src}) + "\n")


def tiny_corpus(directory):
    rng = random.Random(0)
    os.makedirs(directory)
    code = lambda i: "\n".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(30))  # noqa: E731
    write_jsonl(os.path.join(directory, "code_python.jsonl"), [(code(i), f"c{i}.py") for i in range(40)])
    write_jsonl(os.path.join(directory, "quotes_en.jsonl"), [(sentences(rng, 8), f"q{i}") for i in range(40)])
    numbers = lambda: "\n".join(" ".join(str(rng.randint(0, 99)) for _ in range(8)) for _ in range(20))  # noqa: E731
    write_jsonl(os.path.join(directory, "tables.jsonl"), [(numbers(), f"t{i}") for i in range(40)])
    novels = ["PRIDE AND PREJUDICE", "SENSE AND SENSIBILITY", "Persuasion", "EMMA"]
    write_jsonl(os.path.join(directory, "novels_austen.jsonl"),
                [(sentences(rng, 30), f"{novel}#{c}") for novel in novels for c in range(6)])


def test_demo_pipeline_end_to_end(tmp_path):
    corpus, work = str(tmp_path / "corpus"), str(tmp_path / "demo")
    tiny_corpus(corpus)
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
               OMP_NUM_THREADS="1")
    command = [sys.executable, os.path.join(REPO, "examples", "demo", "demo.py"), "--work-dir", work,
               "--corpus-dir", corpus, "--generic", "code_python,quotes_en,tables", "--vocab-size", "300",
               "--model", "tiny", "--train-iters", "6", "--global-batch-size", "4", "--micro-batch-size", "2",
               "--eval-interval", "3"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    assert "| dga-ema |" in result.stdout and "| uniform |" in result.stdout

    for name in ("weights.png", "losses.png", "alignment.png"):
        path = os.path.join(work, "plots", name)
        assert os.path.getsize(path) > 10_000, path
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    dga = os.path.join(work, "runs", "dga-ema")
    events = EventAccumulator(os.path.join(dga, "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ["lm loss", "data-mixture/quotes_en", "alignment/code_python", "lm loss validation/specific",
                "domain-epochs/tables"]:
        assert tag in tags, tag
    run = read_run(os.path.join(dga, "metrics.jsonl"))
    assert [s for s, _ in run.series["lm loss"]] == [6]  # logged every 10 iterations, and at the last
    assert set(run.group("data-mixture")) == {"code_python", "quotes_en", "tables"}
    # Austen was split by novel: nothing of the held-out novel is in the specific set.
    specific = open(os.path.join(work, "specific.jsonl")).read()
    heldout = open(os.path.join(work, "heldout.jsonl")).read()
    assert "Persuasion#" in heldout and "Persuasion#" not in specific and "PRIDE AND PREJUDICE#" in specific

    # A second run reuses everything: no training, same table.
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and "already done" in again.stdout
