"""DGA alignment scores are the same in every parallel layout, and equal brute force, for every
--dga-alignment kind (raw, adam, cosine), and so are their standard errors.

The brute force reference takes, in one process, the full gradients of the mean loss over the
probe sequences with torch.autograd and dots them (with Adam's preconditioner read from the
plain torch optimizer, for adam). The parallel layouts compute the same numbers from sharded
gradients (TP with and without sequence parallelism, PP), data-parallel shares (DP=2, with ZeRO
0, 1 and 2), ZeRO-partitioned optimizer state, and the linearity shortcut; the full all-reduce
path gives them too. Two training steps at learning rate 0 first fill Adam's second moments
without moving the model.
"""

import json
import os

import numpy as np
import pytest

from pretrain_helpers import SMALL_MODEL, driver_command, make_domains, run, synthetic_documents, write_domain

DRIVER = os.path.join(os.path.dirname(__file__), "drivers", "alignment_driver.py")

# DP=1 layouts probe 2 micro batches per rank; DP=2 layouts 1 per rank: the same 4 sequences.
LAYOUTS = {
    "single": (1, ["--dga-probe-microbatches", "2"]),
    "tp2": (2, ["--dga-probe-microbatches", "2", "--tensor-model-parallel-size", "2"]),
    "tp2-sp": (2, ["--dga-probe-microbatches", "2", "--tensor-model-parallel-size", "2", "--sequence-parallel"]),
    "pp2": (2, ["--dga-probe-microbatches", "2", "--pipeline-model-parallel-size", "2"]),
    "pp2-zero1": (2, ["--dga-probe-microbatches", "2", "--pipeline-model-parallel-size", "2", "--zero-stage", "1"]),
    "dp2-zero0": (2, ["--dga-probe-microbatches", "1", "--zero-stage", "0"]),
    "dp2-zero1": (2, ["--dga-probe-microbatches", "1", "--zero-stage", "1"]),
    "dp2-zero2": (2, ["--dga-probe-microbatches", "1", "--zero-stage", "2"]),
    # Stages exchange activations cut over the TP ranks ("pipe_partitioned"), probes included.
    "tp2-pp2": (4, ["--dga-probe-microbatches", "2", "--tensor-model-parallel-size", "2",
                    "--pipeline-model-parallel-size", "2"]),
}
KINDS = ("raw", "adam", "cosine")
STEPS = "2"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignment")
    manifest = make_domains(str(root / "data"))
    rng = np.random.default_rng(11)
    specific = str(root / "data" / "specific_text_document")
    write_domain(specific, synthetic_documents(rng, (85, 170), 20))
    args = ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--mixing", "dga", "--dga-update-interval", "10", "--specific-data-path", specific, "--split", "90,10,0",
            "--train-iters", "10",
            "--lr", "0", "--hidden-dropout", "0", "--attention-dropout", "0"]
    return root, args


def run_driver(root, args, name, nproc, mode, extra):
    out = str(root / f"{name}-{mode}.json")
    command = driver_command(DRIVER, nproc, [out, mode, STEPS], [*args, *extra])
    run(command)
    with open(out) as f:
        return json.load(f)


def test_alignment_equals_brute_force_in_every_layout(setup):
    root, args = setup
    reference = run_driver(root, args, "single", 1, "reference", LAYOUTS["single"][1])
    for kind in KINDS:
        assert len(reference[kind]) == 3 and np.all(np.abs(reference[kind]) > 1e-6), kind
    # Adam's preconditioner changes the scores beyond a common factor.
    raw, adam = np.array(reference["raw"]), np.array(reference["adam"])
    assert not np.allclose(adam / adam[0], raw / raw[0], rtol=1e-2)
    for name, (nproc, extra) in LAYOUTS.items():
        result = run_driver(root, args, name, nproc, "measure", extra)
        for kind in KINDS:
            # Within 1e-5 of the largest score: Adam's second moments come from each layout's
            # own fp32 gradients, whose rounding differs, and a small score is a difference of
            # large terms.
            scale = np.max(np.abs(reference[kind]))
            np.testing.assert_allclose(result[kind], reference[kind], rtol=1e-5, atol=1e-5 * scale,
                                       err_msg=f"{name} {kind}")
            # The linearity shortcut gives what all-reducing every domain gradient gives.
            np.testing.assert_allclose(result[f"full_allreduce_{kind}"], result[kind], rtol=1e-9,
                                       err_msg=f"{name} {kind}")
        np.testing.assert_allclose(result["stderr_raw"], reference["stderr_raw"], rtol=1e-5, err_msg=name)
