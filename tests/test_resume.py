"""Exact resume: 10 iterations straight equal 5 iterations, stop, --load, 5 more.

Dropout is on, so the RNG states must come back too; the learning-rate schedule has warmup
and cosine decay; the data position and blend come from the checkpoint.
"""

import os
import sys
import textwrap

import pytest
import torch

from megatron_dga.training.checkpointing import TRACKER, read_tracker
from megatron_dga.training.export import latest_checkpoint_dir, load_merged_state_dict
from pretrain_helpers import SMALL_MODEL, losses_by_iteration, make_domains, pretrain, read_metrics, run


def train_args(manifest, run_dir, extra=()):
    return [
        "--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "8",
        "--train-iters", "10", "--lr", "2e-3", "--lr-warmup-iters", "2", "--lr-decay-style", "cosine",
        "--hidden-dropout", "0.1", "--attention-dropout", "0.1", "--log-interval", "1", "--eval-interval", "5",
        "--eval-iters", "1", "--split", "90,10,0", "--metrics-file", os.path.join(run_dir, "metrics.jsonl"),
        "--save", os.path.join(run_dir, "checkpoints"), *extra,
    ]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("resume-data")))


@pytest.mark.parametrize(
    "nproc,layout",
    [(1, []), (2, ["--pipeline-model-parallel-size", "2"]), (2, ["--zero-stage", "2"]),
     (2, ["--tensor-model-parallel-size", "2"]), (2, ["--tensor-model-parallel-size", "2", "--sequence-parallel"])],
    ids=["single", "pp2", "dp2-zero2", "tp2", "tp2-sp"],
)
def test_resume_is_exact(tmp_path, manifest, nproc, layout):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    pretrain(train_args(manifest, straight, layout), nproc=nproc)
    pretrain(train_args(manifest, resumed, [*layout, "--exit-interval", "5"]), nproc=nproc)
    assert read_tracker(os.path.join(resumed, "checkpoints")) == 5
    pretrain(train_args(manifest, resumed, [*layout, "--load", os.path.join(resumed, "checkpoints")]), nproc=nproc)

    expected = losses_by_iteration(os.path.join(straight, "metrics.jsonl"))
    got = losses_by_iteration(os.path.join(resumed, "metrics.jsonl"))
    assert sorted(got) == list(range(1, 11))
    for iteration in range(1, 11):
        assert got[iteration] == pytest.approx(expected[iteration], rel=1e-6, abs=0), iteration
    learning_rates = [r["learning_rate"] for r in read_metrics(os.path.join(resumed, "metrics.jsonl"))]
    assert learning_rates == pytest.approx([r["learning_rate"] for r in read_metrics(os.path.join(straight, "metrics.jsonl"))])

    a = load_merged_state_dict(latest_checkpoint_dir(os.path.join(straight, "checkpoints")))
    b = load_merged_state_dict(latest_checkpoint_dir(os.path.join(resumed, "checkpoints")))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-6, msg=lambda m: f"{key}: {m}")


def test_tensor_parallel_dropout_is_reproducible(tmp_path, manifest):
    """With TP = 2 and dropout on (megatron-core's model-parallel RNG tracker inside the TP
    region), the same command gives the same run, bit for bit."""
    layout = ["--tensor-model-parallel-size", "2", "--train-iters", "4"]
    for name in ("first", "second"):
        pretrain(train_args(manifest, str(tmp_path / name), layout), nproc=2)
    first = read_metrics(str(tmp_path / "first" / "metrics.jsonl"))
    second = read_metrics(str(tmp_path / "second" / "metrics.jsonl"))
    assert [(r["lm_loss"], r["grad_norm"]) for r in first] == [(r["lm_loss"], r["grad_norm"]) for r in second]
    assert len(first) == 4
    # dropout is on: a run without it differs
    pretrain(train_args(manifest, str(tmp_path / "off"), [*layout, "--hidden-dropout", "0", "--attention-dropout", "0"]),
             nproc=2)
    assert read_metrics(str(tmp_path / "off" / "metrics.jsonl"))[0]["lm_loss"] != first[0]["lm_loss"]


CRASHING_RUN = textwrap.dedent(
    """
    import os, sys
    import torch
    import megatron_dga.training.checkpointing as checkpointing

    # Die like a killed process half way through writing the checkpoint of iteration 10:
    # after DeepSpeed opened its model file for iteration 10, before anything is renamed.
    real_save = torch.save
    def dying_save(obj, f, *args, **kwargs):
        if "iter_0000010" in str(f):
            with open(f, "wb") as partial:
                partial.write(b"half a checkpoint")
            os._exit(9)
        return real_save(obj, f, *args, **kwargs)
    torch.save = dying_save
    from megatron_dga.pretrain import main
    sys.exit(main(sys.argv[1:]))
    """
)


def test_crash_during_save_keeps_last_good_checkpoint(tmp_path, manifest):
    run_dir = str(tmp_path / "run")
    checkpoints = os.path.join(run_dir, "checkpoints")
    script = tmp_path / "crashing_run.py"
    script.write_text(CRASHING_RUN)
    args = train_args(manifest, run_dir, ["--save-interval", "5"])
    result = run([sys.executable, str(script), *args], expect_ok=False)
    assert result.returncode == 9, result.stderr[-3000:]
    # The save of iteration 10 died midway: its files are only in the staging folder, and
    # the tracker still names iteration 5, which is complete.
    assert open(os.path.join(checkpoints, TRACKER)).read().strip() == "5"
    assert os.path.isdir(os.path.join(checkpoints, "iter_0000010.partial"))
    assert not os.path.exists(os.path.join(checkpoints, "iter_0000010"))

    # Resuming loads iteration 5 and trains to the end, cleaning the partial save.
    pretrain(train_args(manifest, run_dir, ["--load", checkpoints]))
    assert read_tracker(checkpoints) == 10
    assert not os.path.exists(os.path.join(checkpoints, "iter_0000010.partial"))
    iterations = [r["iteration"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))]
    assert iterations == list(range(1, 11))
