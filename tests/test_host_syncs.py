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
