"""Resume under another layout with --reshard: the model, Adam's moments, the schedule, the data
position and DGA's state carry over, so the next losses equal those of an uninterrupted 1-rank
run. Without --reshard a changed layout is refused, as before."""

import os
import shutil

import numpy as np
import pytest
import torch

from megatron_dga.training.export import latest_checkpoint_dir, load_merged_state_dict
from megatron_dga.training.reshard import read_training_state
from pretrain_helpers import SMALL_MODEL, losses_by_iteration, make_domains, pretrain, synthetic_documents, \
    write_domain

ITERATIONS, SAVED_AT = 8, 4


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reshard-data")
    manifest = make_domains(str(root), docs_per_domain=60, kinds=["motif", "ramp", "noise"])
    rng = np.random.default_rng(3)
    write_domain(str(root / "spec_text_document"), synthetic_documents(rng, (85, 170), 30, kind="ramp"))
    return {"manifest": manifest, "specific": str(root / "spec_text_document")}


def args_for(data, run_dir, extra=()):
    # DGA with Adam-preconditioned alignment: its scores read the optimizer's second moments,
    # so a wrongly carried exp_avg_sq shows in the mixture as well as in the loss. A global probe
    # batch: the same probes in every layout.
    return ["--domains-manifest", data["manifest"], *SMALL_MODEL, "--micro-batch-size", "2",
            "--global-batch-size", "8", "--train-iters", str(ITERATIONS), "--lr", "3e-3", "--lr-warmup-iters", "2",
            "--lr-decay-style", "cosine", "--hidden-dropout", "0", "--attention-dropout", "0", "--split", "90,10,0",
            "--eval-interval", "1000", "--log-interval", "1",
            "--mixing", "dga", "--dga-update-interval", "2", "--dga-probe-batch-size", "4",
            "--specific-data-path", data["specific"],
            "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), "--save", os.path.join(run_dir, "checkpoints"),
            *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted 1-rank run."""
    run_dir = str(tmp_path_factory.mktemp("reshard-reference"))
    pretrain(args_for(data, run_dir))
    return losses_by_iteration(os.path.join(run_dir, "metrics.jsonl"))


def saved_run(tmp_path_factory, data, layout, nproc):
    run_dir = str(tmp_path_factory.mktemp("reshard-source"))
    pretrain(args_for(data, run_dir, [*layout, "--exit-interval", str(SAVED_AT)]), nproc=nproc)
    return os.path.join(run_dir, "checkpoints")


@pytest.fixture(scope="module")
def tp2_checkpoint(tmp_path_factory, data):
    return saved_run(tmp_path_factory, data, ["--tensor-model-parallel-size", "2"], 2)


def resume(tmp_path, data, checkpoints, layout, nproc, extra=()):
    run_dir = str(tmp_path / "resumed")
    copy = os.path.join(run_dir, "checkpoints")
    shutil.copytree(checkpoints, copy)
    return run_dir, pretrain(args_for(data, run_dir, [*layout, "--load", copy, *extra]), nproc=nproc,
                             expect_ok=False)


def assert_continues_like(reference, run_dir):
    got = losses_by_iteration(os.path.join(run_dir, "metrics.jsonl"))
    assert sorted(got) == list(range(SAVED_AT + 1, ITERATIONS + 1))
    for iteration in got:
        assert got[iteration] == pytest.approx(reference[iteration], rel=1e-4), iteration


@pytest.mark.parametrize(
    "layout,nproc",
    [([], 1), (["--pipeline-model-parallel-size", "2"], 2), (["--zero-stage", "1"], 2)],
    ids=["one-rank", "pp2", "dp2-zero1"],
)
def test_tp2_checkpoint_resumes_in_another_layout(tmp_path, data, reference, tp2_checkpoint, layout, nproc):
    run_dir, result = resume(tmp_path, data, tp2_checkpoint, layout, nproc, ["--reshard"])
    assert result.returncode == 0, result.stderr[-5000:]
    assert "resharded from TP=2 PP=1 DP=1" in result.stdout
    assert_continues_like(reference, run_dir)


def test_zero1_checkpoint_resumes_on_one_rank(tmp_path_factory, tmp_path, data, reference):
    checkpoints = saved_run(tmp_path_factory, data, ["--zero-stage", "1"], 2)
    run_dir, result = resume(tmp_path, data, checkpoints, [], 1, ["--reshard"])
    assert result.returncode == 0, result.stderr[-5000:]
    assert_continues_like(reference, run_dir)


def test_another_layout_without_reshard_is_refused(tmp_path, data, tp2_checkpoint):
    run_dir, result = resume(tmp_path, data, tp2_checkpoint, [], 1)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "--reshard" in result.stderr
    assert not os.path.exists(os.path.join(run_dir, "metrics.jsonl")) or \
        not losses_by_iteration(os.path.join(run_dir, "metrics.jsonl"))


def test_bf16_checkpoints_reshard(tmp_path_factory, tmp_path, data):
    """bf16 with PP (DeepSpeed's bf16 optimizer: flat fp32 partitions; pipeline layer files, the
    tied embedding on both stages) into TP2 without ZeRO (DeepSpeed's bf16 wrapper: an fp32
    master per parameter). The masters are read by name: each, rounded to bf16, is the saved
    bf16 weight."""
    bf16 = ["--bf16"]
    checkpoints = saved_run(tmp_path_factory, data, [*bf16, "--pipeline-model-parallel-size", "2"], 2)
    directory = latest_checkpoint_dir(checkpoints)
    state = read_training_state(directory)
    model = load_merged_state_dict(directory)
    assert set(state.weights) == set(model) and state.step == SAVED_AT
    for name, weight in model.items():
        assert weight.dtype == torch.bfloat16
        assert torch.equal(state.weights[name].to(torch.bfloat16), weight), name
        assert state.moments[name]["exp_avg_sq"].shape == weight.shape
    assert all(state.moments[name]["exp_avg_sq"].abs().sum() > 0 for name in model)

    straight = str(tmp_path / "straight")
    pretrain(args_for(data, straight, bf16))
    run_dir, result = resume(tmp_path, data, checkpoints, [*bf16, "--tensor-model-parallel-size", "2"], 2,
                             ["--reshard"])
    assert result.returncode == 0, result.stderr[-5000:]
    expected = losses_by_iteration(os.path.join(straight, "metrics.jsonl"))
    got = losses_by_iteration(os.path.join(run_dir, "metrics.jsonl"))
    assert sorted(got) == list(range(SAVED_AT + 1, ITERATIONS + 1))
    for iteration in got:  # bf16: layouts agree within its precision only
        assert got[iteration] == pytest.approx(expected[iteration], rel=1e-2), iteration
