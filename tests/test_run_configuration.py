"""Run configuration beyond the flags: a DeepSpeed config JSON, and Megatron's --data-path."""

import json

import pytest

from megatron_dga.arguments import parse_args
from megatron_dga.parallel.layout import LayoutError, resolve_layout
from megatron_dga.training.deepspeed_config import apply_user_config, derive_config, load_user_config
from pretrain_helpers import SMALL_MODEL, TOY_MODEL, make_domains, pretrain, read_metrics, run, torchrun_command


def test_deepspeed_json_wins_over_flags(tmp_path):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"train_micro_batch_size_per_gpu": 2, "train_batch_size": 8, "gradient_clipping": 0.5,
                                "zero_optimization": {"stage": 1}, "wall_clock_breakdown": False}))
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "5", "--micro-batch-size", "4", "--global-batch-size", "16",
                         "--clip-grad", "1.0", "--deepspeed_config", str(path)])
    user = load_user_config(config.training.deepspeed_config)
    warnings = apply_user_config(config, user)
    assert "--deepspeed_config's train_batch_size 8 replaces --global-batch-size 16" in warnings
    assert "--deepspeed_config's gradient_clipping 0.5 replaces --clip-grad 1.0" in warnings
    assert len(warnings) == 4  # micro batch, global batch, clipping, ZeRO stage
    layout = resolve_layout(config, world_size=2)
    ds = derive_config(config, layout, user)
    assert (layout.micro_batch_size, layout.global_batch_size, layout.grad_accumulation_steps) == (2, 8, 2)
    assert ds["gradient_clipping"] == 0.5 and ds["zero_optimization"] == {"stage": 1}
    assert config.parallel.zero_stage == 1 and ds["gradient_accumulation_steps"] == 2


def test_deepspeed_json_in_a_run(tmp_path):
    manifest = make_domains(str(tmp_path / "data"))
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 2, "train_batch_size": 8}))
    metrics = tmp_path / "metrics.jsonl"
    result = pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "4", "--train-iters", "2",
                       "--log-interval", "1", "--eval-interval", "100", "--split", "90,10,0",
                       "--deepspeed", "--deepspeed_config", str(ds), "--metrics-file", str(metrics)])
    assert "global batch 8 = micro 2 x DP 1 x accumulation 4" in result.stdout
    assert "warning: --deepspeed_config's train_micro_batch_size_per_gpu 2 replaces --micro-batch-size 4" \
        in result.stdout
    assert result.stdout.count("Setting accelerator to CPU") == 0 and "DeepSpeed's CPU accelerator, gloo" in result.stdout
    assert [r["consumed_samples"] for r in read_metrics(str(metrics))] == [8, 16]


def test_bad_deepspeed_json(tmp_path):
    bad = tmp_path / "ds.json"
    bad.write_text("{not json")
    result = run(torchrun_command(1, [*TOY_MODEL, "--data-path", "x", "--deepspeed_config", str(bad)]), expect_ok=False)
    assert f"--deepspeed_config {bad}: invalid JSON at line 1" in result.stderr


def test_data_path_blend(tmp_path):
    make_domains(str(tmp_path), num_domains=2)
    a, b = str(tmp_path / "dom0_text_document"), str(tmp_path / "dom1_text_document")
    metrics = tmp_path / "metrics.jsonl"
    pretrain(["--data-path", "0.25", a, "0.75", b, "--vocab-size", "256", *SMALL_MODEL, "--micro-batch-size", "4",
              "--train-iters", "2", "--log-interval", "2", "--eval-interval", "100", "--split", "90,10,0",
              "--metrics-file", str(metrics)])
    record = read_metrics(str(metrics))[-1]
    # Domains are named after their files, and the weights given with --data-path are the blend.
    assert record["data_mixture"] == pytest.approx({"dom0": 0.25, "dom1": 0.75})
    assert record["domain_tokens"] == {"dom0": 2 * 32, "dom1": 6 * 32}


def test_zero_overlaps_communication_on_gpus_only(monkeypatch):
    """ZeRO-1/2 on GPUs: gradient reduction overlapped with the backward pass and contiguous
    gradient buffers; on the CPU, DeepSpeed's defaults; a JSON's ZeRO section still wins."""
    from megatron_dga.training import deepspeed_config

    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "5", "--micro-batch-size", "2", "--global-batch-size", "4",
                         "--zero-stage", "2"])
    layout = resolve_layout(config, world_size=2)
    assert derive_config(config, layout, {})["zero_optimization"] == {"stage": 2}
    monkeypatch.setattr(deepspeed_config.torch.cuda, "is_available", lambda: True)
    assert derive_config(config, layout, {})["zero_optimization"] == {
        "stage": 2, "overlap_comm": True, "contiguous_gradients": True}
    assert deepspeed_config.zero_section(0) == {"stage": 0}
    user = {"zero_optimization": {"stage": 2, "overlap_comm": False}}
    assert derive_config(config, layout, user)["zero_optimization"] == {"stage": 2, "overlap_comm": False}


def test_pipeline_stages_exchange_activations_cut_over_tensor_parallel_ranks():
    """With TP and PP, each stage sends 1/TP of an activation (and of its gradient); without TP
    there is nothing to cut. The losses are unchanged (the TP2 x PP2 equivalence and alignment
    tests run this way)."""
    def pipeline(world_size, *flags):
        config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "5", "--num-layers", "2", *flags])
        return derive_config(config, resolve_layout(config, world_size), {})["pipeline"]

    both = ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"]
    assert pipeline(4, *both) == {"pipe_partitioned": True, "grad_partitioned": True}
    assert pipeline(2, "--pipeline-model-parallel-size", "2") == {"pipe_partitioned": False, "grad_partitioned": False}
    # Under sequence parallelism the activations are already cut (over the sequence).
    assert pipeline(4, *both, "--sequence-parallel") == {"pipe_partitioned": False, "grad_partitioned": False}
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "5", "--num-layers", "2", *both, "--sequence-parallel"])
    with pytest.raises(LayoutError, match="pipe_partitioned"):
        derive_config(config, resolve_layout(config, 4), {"pipeline": {"pipe_partitioned": True}})
