"""The demo pipeline, shrunk: a tiny corpus made here, a tiny model, a few iterations, both
runs on 2 ranks through the deepspeed launcher. Its outputs hold the named series."""

import os
import re
import subprocess
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from megatron_dga.monitoring.runs import read_run
from text_helpers import tiny_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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
    # Progress on the console while it trains, and a sample from the exported model at the end.
    assert re.search(r"\[dga-ema\] \[[\d: -]+\] iteration\s+6/\s+6 \| consumed samples", result.stdout), \
        result.stdout[-3000:]
    assert "[uniform] validation loss at iteration 6" in result.stdout
    assert "continued by transformers:" in result.stdout
    assert os.path.exists(os.path.join(work, "runs", "dga-ema", "hf", "model.safetensors"))

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
