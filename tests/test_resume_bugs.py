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


def test_finetune_loads_the_weights_alone_and_starts_at_iteration_zero(tmp_path, manifest):
    """--finetune (Megatron's): the checkpoint's model weights, a fresh optimizer and schedule,
    iteration 0. With a learning rate of 0 the weights it saves are the checkpoint's, exactly;
    with one, its schedule is a fresh run's and its first loss is the trained model's."""
    import torch

    from megatron_dga.training.export import latest_checkpoint_dir, load_merged_state_dict

    trained = str(tmp_path / "trained")
    pretrain(args_for(manifest, str(tmp_path / "a"), 6, ["--lr", "2e-3", "--save", trained]))
    frozen = str(tmp_path / "frozen")
    result = pretrain(args_for(manifest, str(tmp_path / "b"), 2, ["--load", trained, "--finetune", "--lr", "0",
                                                                  "--min-lr", "0", "--save", frozen]))
    assert "--finetune: model weights from" in result.stdout
    assert read_tracker(frozen) == 2  # counted from 0
    a = load_merged_state_dict(latest_checkpoint_dir(trained))
    b = load_merged_state_dict(latest_checkpoint_dir(frozen))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=lambda m: f"{key}: {m}")

    schedule = ["--lr", "2e-3", "--lr-warmup-iters", "2"]
    pretrain(args_for(manifest, str(tmp_path / "fresh"), 3, schedule))
    pretrain(args_for(manifest, str(tmp_path / "tuned"), 3, [*schedule, "--load", trained, "--finetune"]))
    fresh = read_metrics(str(tmp_path / "fresh" / "metrics.jsonl"))
    tuned = read_metrics(str(tmp_path / "tuned" / "metrics.jsonl"))
    assert [r["iteration"] for r in tuned] == [1, 2, 3]
    assert [r["learning_rate"] for r in tuned] == [r["learning_rate"] for r in fresh]
    first_trained = read_metrics(str(tmp_path / "a" / "metrics.jsonl"))[-1]["lm_loss"]
    assert tuned[0]["lm_loss"] < fresh[0]["lm_loss"] - 0.5 and tuned[0]["lm_loss"] < first_trained + 0.5


def test_no_save_rng_writes_no_rng_states_and_resumes_seeded(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    pretrain(args_for(manifest, str(tmp_path / "a"), 2, ["--save", checkpoints, "--no-save-rng"]))
    assert not os.path.exists(os.path.join(checkpoints, "iter_0000002", "rng"))
    assert os.path.exists(os.path.join(checkpoints, "iter_0000002", "metadata.json"))
    result = pretrain(args_for(manifest, str(tmp_path / "a"), 4, ["--save", checkpoints, "--load", checkpoints]))
    assert "generators seeded from --seed and the iteration" in result.stdout
    assert read_tracker(checkpoints) == 4
