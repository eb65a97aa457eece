"""Importance sampling with the specific set assigned at start-up (--importance-clusters):
what training knows of the specific set (here only --specific-train-samples sequences) is
turned back into text and assigned to one centroid per source domain."""

import os
import subprocess
import sys

from pretrain_helpers import SMALL_MODEL, pretrain, read_metrics
from text_helpers import tiny_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_importance_weights_from_the_few_examples(tmp_path):
    corpus, work = str(tmp_path / "corpus"), str(tmp_path / "work")
    tiny_corpus(corpus)
    prepare = [sys.executable, os.path.join(REPO, "examples", "austen", "prepare.py"), "--work-dir", work,
               "--corpus-dir", corpus, "--generic", "code_python,quotes_en,tables", "--vocab-size", "300",
               "--importance", "--embedder", "tfidf", "--max-docs", "40", "--workers", "1"]
    result = subprocess.run(prepare, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = tmp_path / "metrics.jsonl"
    pretrain(["--domains-manifest", os.path.join(work, "data", "domains.json"), *SMALL_MODEL,
              "--micro-batch-size", "2", "--train-iters", "2", "--log-interval", "2", "--eval-interval", "100",
              "--split", "90,10,0", "--specific-data-path", os.path.join(work, "data", "specific_text_document"),
              "--specific-train-samples", "4", "--mixing", "importance",
              "--importance-clusters", os.path.join(work, "source_centroids"), "--metrics-file", str(metrics)])
    weights = read_metrics(str(metrics))[-1]["data_mixture"]
    # Austen-like prose lands on the prose domain, not on code or tables.
    assert weights["quotes_en"] > 0.9, weights
    assert abs(sum(weights.values()) - 1) < 1e-9
