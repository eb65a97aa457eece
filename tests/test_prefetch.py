"""Batches read ahead on a background thread are exactly the batches read when needed, across
mixture updates; pipeline stages between the first and the last read no data, and a 4-stage
pipeline still trains like one rank; tensor-parallel peers share one read."""

import json
import os

import numpy as np
import pytest

from megatron_dga.config import DataConfig
from megatron_dga.data.batches import PrefetchedBatches, TrainBatches
from megatron_dga.data.blend import DynamicBlend
from megatron_dga.data.domains import open_domains
from megatron_dga.parallel.layout import Layout
from pretrain_helpers import SMALL_MODEL, driver_command, losses_by_iteration, make_domains, pretrain, run

READS_DRIVER = os.path.join(os.path.dirname(__file__), "drivers", "batch_reads_driver.py")

LAYOUT = Layout(1, 1, 1, 1, 2, 8)
ITERATIONS, UPDATE_EVERY = 12, 4
WEIGHTS = [[0.6, 0.3, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]]


def update_due(iteration):
    return iteration > 0 and iteration % UPDATE_EVERY == 0


def fresh_batches(manifest):
    domains, _, _ = open_domains(DataConfig(domains_manifest=manifest, split="100,0,0"), seq_length=16, seed=3)
    blend = DynamicBlend(3, [1, 1, 1])
    return TrainBatches([d.train for d in domains], blend, LAYOUT, 0, None, False), blend


def read_all(manifest, prefetch_guarded=None):
    """Every iteration's tokens, as the trainer reads them: an update before the iterations
    due one, and (prefetching) the next iteration read ahead unless an update comes first."""
    batches, blend = fresh_batches(manifest)
    reader = PrefetchedBatches(batches, pin_memory=False) if prefetch_guarded is not None else batches
    tokens = []
    for iteration in range(ITERATIONS):
        if update_due(iteration):
            blend.set_weights(iteration * LAYOUT.global_batch_size, WEIGHTS[iteration // UPDATE_EVERY - 1])
        micro_batches = reader.microbatches(iteration)
        following = iteration + 1
        if prefetch_guarded is not None and following < ITERATIONS and \
                not (prefetch_guarded and update_due(following)):
            reader.prefetch(following)
        tokens.append(np.stack([mb.tokens.numpy() for mb in micro_batches]))
    if prefetch_guarded is not None:
        reader.close()
    return tokens


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("prefetch-data")))


def test_prefetched_batches_are_the_batches_read_when_needed(manifest):
    synchronous = read_all(manifest)
    prefetched = read_all(manifest, prefetch_guarded=True)
    assert all(np.array_equal(a, b) for a, b in zip(synchronous, prefetched))
    # Reading ahead across an update would read batches of the old weights: the guard matters.
    unguarded = read_all(manifest, prefetch_guarded=False)
    assert not all(np.array_equal(a, b) for a, b in zip(synchronous, unguarded))


def test_four_pipeline_stages_train_like_one_rank(tmp_path, manifest):
    """Stages 1 and 2 of 4 read no data; the losses are those of one rank."""
    losses = {}
    for name, nproc, layout in (("single", 1, []), ("pp4", 4, ["--pipeline-model-parallel-size", "4"])):
        metrics = str(tmp_path / f"{name}.jsonl")
        pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--num-layers", "4", "--micro-batch-size", "2",
                  "--global-batch-size", "8", "--train-iters", "4", "--lr", "1e-3", "--hidden-dropout", "0",
                  "--attention-dropout", "0", "--log-interval", "1", "--eval-interval", "100", "--split", "100,0,0",
                  "--metrics-file", metrics, *layout], nproc=nproc)
        losses[name] = losses_by_iteration(metrics)
    assert sorted(losses["pp4"]) == [1, 2, 3, 4]
    for iteration, loss in losses["single"].items():
        assert losses["pp4"][iteration] == pytest.approx(loss, rel=1e-4), iteration


def test_tensor_parallel_peers_share_one_read(tmp_path, manifest):
    """With TP = 2 only the first rank of the group reads the domain files; its peer receives
    the same micro batches, which are those one rank reads alone."""
    args = ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "10", "--hidden-dropout", "0", "--attention-dropout", "0", "--eval-interval", "100",
            "--split", "100,0,0"]
    steps = 3
    received = {}
    for name, nproc, layout in (("single", 1, []), ("tp2", 2, ["--tensor-model-parallel-size", "2"])):
        prefix = str(tmp_path / name)
        run(driver_command(READS_DRIVER, nproc, [prefix, str(steps)], [*args, *layout]))
        for rank in range(nproc):
            with open(f"{prefix}-{rank}.json") as f:
                received[name, rank] = json.load(f)
    assert received["tp2", 0]["tp_rank"] == 0 and received["tp2", 1]["tp_rank"] == 1
    # One read per iteration by the reader, plus the next iteration's, read ahead; none by its peer.
    assert received["tp2", 0]["reads"] == received["single", 0]["reads"] == steps + 1
    assert received["tp2", 1]["reads"] == 0
    single = received["single", 0]["batches"]
    assert len(single) == steps and len(single[0]) == 2
    assert received["tp2", 0]["batches"] == single
    assert received["tp2", 1]["batches"] == single
