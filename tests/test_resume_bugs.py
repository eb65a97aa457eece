"""Resume bugs, each with the test that found it: a DeepSpeed-config scheduler, a larger data-
parallel size, bf16 optimizer shards, and DeepSpeed's files flushed before the rename."""

import json
import os

import pytest

from megatron_dga.training.checkpointing import read_tracker
from pretrain_helpers import SMALL_MODEL, make_domains, pretrain, read_metrics


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("resume-bugs-data")))


def args_for(manifest, run_dir, iters, extra=()):
    return ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", str(iters), "--split", "90,10,0", "--eval-interval", "1000", "--log-interval", "1",
            "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), *extra]


def test_a_deepspeed_config_scheduler_is_restored(tmp_path, manifest):
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"scheduler": {"type": "WarmupDecayLR", "params": {
        "warmup_min_lr": 0.0, "warmup_max_lr": 1e-3, "warmup_num_steps": 4, "total_num_steps": 12}}}))
    common = ["--deepspeed_config", str(ds)]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    checkpoints = os.path.join(resumed, "checkpoints")
    pretrain(args_for(manifest, straight, 10, common))
    pretrain(args_for(manifest, resumed, 10, [*common, "--save", checkpoints, "--exit-interval", "5"]))
    pretrain(args_for(manifest, resumed, 10, [*common, "--save", checkpoints, "--load", checkpoints]))
    a = {r["iteration"]: r["learning_rate"] for r in read_metrics(os.path.join(straight, "metrics.jsonl"))}
    b = {r["iteration"]: r["learning_rate"] for r in read_metrics(os.path.join(resumed, "metrics.jsonl"))}
    assert b == a  # without restoring it, the resumed schedule restarts its warm-up


def test_more_data_parallel_ranks_resume(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    pretrain(args_for(manifest, str(tmp_path / "a"), 4, ["--save", checkpoints]))
    result = pretrain(args_for(manifest, str(tmp_path / "b"), 6, ["--save", checkpoints, "--load", checkpoints]),
                      nproc=2)
    assert "generators seeded from --seed and the iteration" in result.stdout
    assert read_tracker(checkpoints) == 6


def test_bf16_optimizer_shards_refuse_another_data_parallel_size(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    pretrain(args_for(manifest, str(tmp_path / "a"), 2, ["--save", checkpoints, "--bf16"]), nproc=2)
    result = pretrain(args_for(manifest, str(tmp_path / "b"), 4, ["--load", checkpoints, "--bf16"]),
                      expect_ok=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "DeepSpeed's bf16 optimizer state is saved in one shard per data-parallel rank" in result.stderr
    # Without the optimizer state the model itself loads.
    pretrain(args_for(manifest, str(tmp_path / "c"), 4, ["--load", checkpoints, "--bf16", "--no-load-optim"]))


def test_a_truncated_checkpoint_file_names_it_and_the_last_intact_checkpoint(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    pretrain(args_for(manifest, str(tmp_path / "a"), 4, ["--save", checkpoints, "--save-interval", "2"]))
    damaged = os.path.join(checkpoints, "iter_0000004", "mp_rank_00_model_states.pt")
    with open(damaged, "r+b") as f:
        f.truncate(os.path.getsize(damaged) // 2)
    result = pretrain(args_for(manifest, str(tmp_path / "b"), 6, ["--load", checkpoints]), expect_ok=False)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert f"{damaged} is truncated or corrupt" in last and "the newest intact one is iteration 2" in last, last


def test_resuming_another_model_shape_names_the_flag_and_both_values(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    pretrain(args_for(manifest, str(tmp_path / "a"), 2, ["--save", checkpoints]))
    result = pretrain(args_for(manifest, str(tmp_path / "b"), 4, ["--load", checkpoints, "--hidden-size", "128"]),
                      expect_ok=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--hidden-size 64 there, 128 here" in result.stderr.strip().splitlines()[-1], result.stderr[-2000:]
