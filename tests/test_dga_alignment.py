"""DGA alignment scores are the same in every parallel layout, and equal brute force.

The brute force reference takes, in one process, the full gradients of the mean loss over the
probe sequences with torch.autograd and dots them. The parallel layouts compute the same
numbers from sharded gradients (TP, PP), data-parallel shares (DP=2, with ZeRO 0 and 2) and the
linearity shortcut; the full all-reduce path gives them too.
"""

import json
import os

import numpy as np
import pytest

from pretrain_helpers import SMALL_MODEL, make_domains, run, synthetic_documents, torchrun_command, write_domain

DRIVER = os.path.join(os.path.dirname(__file__), "drivers", "alignment_driver.py")

# DP=1 layouts probe 2 micro batches per rank; DP=2 layouts 1 per rank: the same 4 sequences.
LAYOUTS = {
    "single": (1, ["--dga-probe-microbatches", "2"]),
    "tp2": (2, ["--dga-probe-microbatches", "2", "--tensor-model-parallel-size", "2"]),
    "pp2": (2, ["--dga-probe-microbatches", "2", "--pipeline-model-parallel-size", "2"]),
    "dp2-zero0": (2, ["--dga-probe-microbatches", "1", "--zero-stage", "0"]),
    "dp2-zero2": (2, ["--dga-probe-microbatches", "1", "--zero-stage", "2"]),
}


def driver_command(nproc, out, mode, args):
    command = torchrun_command(nproc, args)
    module_index = command.index("megatron_dga.pretrain")
    # Same launcher, the driver script instead of the trainer module.
    return command[: module_index - 1] + [DRIVER, out, mode] + command[module_index + 1:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("alignment")
    manifest = make_domains(str(root / "data"))
    rng = np.random.default_rng(11)
    specific = str(root / "data" / "specific_text_document")
    write_domain(specific, synthetic_documents(rng, (85, 170), 20))
    args = ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--mixing", "dga", "--specific-data-path", specific, "--split", "90,10,0", "--train-iters", "1"]
    return root, args


def run_driver(root, args, name, nproc, mode, extra):
    out = str(root / f"{name}-{mode}.json")
    command = driver_command(nproc, out, mode, [*args, *extra])
    run(command)
    with open(out) as f:
        return json.load(f)


def test_alignment_equals_brute_force_in_every_layout(setup):
    root, args = setup
    reference = np.array(run_driver(root, args, "single", 1, "reference", LAYOUTS["single"][1])["scores"])
    assert reference.shape == (3,) and np.all(np.abs(reference) > 1e-6)
    for name, (nproc, extra) in LAYOUTS.items():
        result = run_driver(root, args, name, nproc, "measure", extra)
        np.testing.assert_allclose(result["scores"], reference, rtol=1e-5, err_msg=name)
        # The linearity shortcut gives what all-reducing every domain gradient gives.
        np.testing.assert_allclose(result["full_allreduce"], result["scores"], rtol=1e-9, err_msg=name)
