"""Probes leave training untouched: optimizer state (and ZeRO partitions, bf16 master
gradients), learning-rate schedule, RNG and the training data position. With --dga-lr 0 the
weights never move, so a DGA run must train exactly like a uniform run, probes and all, in
every engine path (bf16 runs on the CPU too, through DeepSpeed's bf16 optimizer)."""


import numpy as np
import pytest

from pretrain_helpers import SMALL_MODEL, make_domains, pretrain, read_metrics, synthetic_documents, write_domain


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("probes")
    manifest = make_domains(str(root))
    write_domain(str(root / "spec_text_document"), synthetic_documents(np.random.default_rng(3), (85, 170), 20))
    return manifest, str(root / "spec_text_document")


@pytest.mark.parametrize("nproc,layout", [
    (1, []),
    (2, ["--pipeline-model-parallel-size", "2", "--zero-stage", "1"]),
    (2, ["--zero-stage", "2"]),
    (2, ["--tensor-model-parallel-size", "2"]),
    (1, ["--bf16"]),
    (2, ["--pipeline-model-parallel-size", "2", "--zero-stage", "1", "--bf16"]),
], ids=["single", "pp2-zero1", "dp2-zero2", "tp2", "single-bf16", "pp2-zero1-bf16"])
def test_probes_do_not_change_training(tmp_path, data, nproc, layout):
    manifest, specific = data
    losses = {}
    for mixing in ("uniform", "dga"):
        metrics = str(tmp_path / f"{mixing}.jsonl")
        pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
                  "--train-iters", "8", "--lr", "2e-3", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
                  "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--log-interval", "1",
                  "--eval-interval", "100", "--split", "90,10,0", "--specific-data-path", specific,
                  "--mixing", mixing, "--dga-lr", "0", "--dga-update-interval", "2", "--metrics-file", metrics,
                  *layout], nproc=nproc)
        losses[mixing] = read_metrics(metrics)
    dga = losses["dga"]
    assert dga[-1]["dga_updates"]["done"] == 3  # probes ran at iterations 2, 4 and 6
    assert all(np.isfinite(v) for v in dga[-1]["alignment"].values())
    for u, d in zip(losses["uniform"], dga):
        assert d["lm_loss"] == u["lm_loss"], (d["iteration"], d["lm_loss"], u["lm_loss"])
        assert d["learning_rate"] == u["learning_rate"]
        assert d["domain_tokens"] == u["domain_tokens"]
