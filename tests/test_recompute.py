"""Activation recompute changes memory, not numbers: with dropout on, every recompute setting
gives bitwise the losses and gradient norms of the run without it, on 1 rank, TP2 and PP2."""

import os

import pytest

from pretrain_helpers import SMALL_MODEL, make_domains, pretrain, read_metrics

LAYOUTS = {"single": (1, []), "tp2": (2, ["--tensor-model-parallel-size", "2"]),
           "pp2": (2, ["--pipeline-model-parallel-size", "2"])}
RECOMPUTE = {
    "full-uniform-1": ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "1"],
    "full-uniform-2": ["--recompute-granularity", "full", "--recompute-method", "uniform", "--recompute-num-layers", "2"],
    "full-block-1": ["--recompute-granularity", "full", "--recompute-method", "block", "--recompute-num-layers", "1"],
    "selective": ["--recompute-granularity", "selective", "--attention-backend", "unfused"],
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("recompute-data")))


def series(manifest, run_dir, nproc, extra):
    metrics = os.path.join(run_dir, "metrics.jsonl")
    pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--num-layers", "4", "--micro-batch-size", "2",
              "--global-batch-size", "4", "--train-iters", "4", "--split", "100,0,0", "--eval-interval", "1000",
              "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--log-interval", "1",
              "--metrics-file", metrics, *extra], nproc=nproc)
    return [(r["lm_loss"], r["grad_norm"]) for r in read_metrics(metrics)]


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_recompute_gives_the_same_losses_and_gradient_norms(tmp_path, manifest, layout):
    nproc, flags = LAYOUTS[layout]
    baseline = series(manifest, str(tmp_path / "none"), nproc, flags)
    unfused = series(manifest, str(tmp_path / "unfused"), nproc, [*flags, "--attention-backend", "unfused"])
    assert len(baseline) == 4
    for name, extra in RECOMPUTE.items():
        reference = unfused if "unfused" in extra else baseline
        assert series(manifest, str(tmp_path / name), nproc, [*flags, *extra]) == reference, name
