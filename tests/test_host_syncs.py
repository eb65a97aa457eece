"""A training step does not read tensors on the host: the loss and the gradient norm stay on
the device until the log interval reads them (and the NaN check, when it is on, each iteration)."""

import json
import os

import pytest

from pretrain_helpers import SMALL_MODEL, driver_command, make_domains, run

DRIVER = os.path.join(os.path.dirname(__file__), "drivers", "host_sync_driver.py")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("host-sync-data")))


@pytest.mark.parametrize("nproc,layout", [(1, []), (2, ["--pipeline-model-parallel-size", "2"]),
                                          (2, ["--zero-stage", "1"]), (2, ["--tensor-model-parallel-size", "2"])],
                         ids=["one-rank", "pp2", "dp2-zero1", "tp2"])
def test_training_steps_read_nothing_on_the_host(tmp_path, manifest, nproc, layout):
    out = str(tmp_path / "reads.json")
    args = ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "10", "--split", "90,10,0", *layout]
    run(driver_command(DRIVER, nproc, [out, "4"], args))
    with open(out) as f:
        reads = json.load(f)
    assert reads == {}, reads


def test_the_loop_reads_the_host_once_per_iteration_for_the_nan_check(tmp_path, manifest):
    """Between log intervals the loop's own reads are the NaN check's, one per iteration (the loss
    and the norm read together); --exit-signal-handler's all-reduce waits for the log interval."""
    out = str(tmp_path / "reads.json")
    args = ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "9", "--split", "90,10,0", "--log-interval", "100", "--eval-interval", "100",
            "--exit-signal-handler"]
    run(driver_command(DRIVER, 1, [out, "loop"], args))
    with open(out) as f:
        reads = json.load(f)
    # the first iteration is not counted: 8 NaN checks, one read each; the last iteration's log
    # line and evaluation read the rest
    assert sum(n for site, n in reads.items() if "check_finite" in site) == 8, reads
    assert not any("stopping.py" in site and "requested" in site for site in reads), reads
    assert all(any(name in site for name in ("check_finite", "reporting.py", "eval_loss")) for site in reads), reads
