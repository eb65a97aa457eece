"""A Megatron-LM user's launch script runs unchanged: the flags of Megatron-LM's and
Megatron-DeepSpeed's own example scripts (tests/data/megatron_launch_scripts.json, collected from
core_v0.16.1, core_v0.7.0 and Megatron-DeepSpeed's main) either work with Megatron's meaning or are
refused with a reason; abbreviations are refused; the length of training and the model's shape are
required (or read from a checkpoint); schedules
in samples and tokens, and Megatron's model flags, train."""

import dataclasses
import json
import math
import os
import re

import pytest

from megatron_dga.arguments import parse_args, parse_args_with_notes
from megatron_dga.megatron_flags import MegatronFlagError, translate
from megatron_dga.parallel.layout import LayoutError, resolve_layout
from pretrain_helpers import SMALL_MODEL, TOY_MODEL, make_domains, pretrain, read_metrics

SCRIPTS = os.path.join(os.path.dirname(__file__), "data", "megatron_launch_scripts.json")
# What the scripts' shell variables hold by default (or a plausible value).
VALUES = {
    "GRAD_CLIP": "1.0", "CP_SIZE": "1", "DATA_CACHE_PATH": "cache", "DATASET": "data/a_text_document",
    "DATA_ARG": "data/a_text_document", "DATA_PATH": "data/a_text_document", "data_path": "data/a_text_document",
    "DS_CONFIG": "ds_config.json", "config_json": "ds_config.json", "eval_interval": "100", "eval_iters": "10",
    "exit_duration": "30000000", "FFN_HIDDEN_SIZE": "11008", "GLOBAL_BATCH_SIZE": "128", "global_batch_size": "256",
    "HIDDEN_SIZE": "4096", "hidden_size": "768", "init_std": "0.02", "CHECKPOINT_PATH": "ckpt",
    "checkpoint_path": "ckpt", "log_interval": "10", "LR": "3e-4", "lr": "6e-4", "lr_decay_style": "cosine",
    "lr_decay_tokens": "300000000000", "LR_WARMUP_STEPS": "2000", "lr_warmup_tokens": "3000000000",
    "MAX_POSITION_EMBEDDINGS": "8192", "SEQ_LENGTH": "8192", "seq_len": "2048", "MERGE_FILE": "merges.txt",
    "merge_path": "merges.txt", "MICRO_BATCH_SIZE": "1", "batch_size": "4", "MIN_LR": "3e-5", "min_lr": "6e-5",
    "NUM_HEADS": "32", "num_attn_heads": "12", "NUM_KV_HEADS": "8", "NUM_LAYERS": "32", "num_layers": "12",
    "num_workers": "0", "PP": "1", "pp_size": "1", "save_interval": "1000", "seed": "1234", "TP": "1",
    "TP_SIZE": "1", "mp_size": "1", "TENSORBOARD_LOGS_PATH": "tb", "tensorboard_path": "tb",
    "TOKENIZER_ARG": "tokenizer.model", "TOKENIZER_PATH": "tokenizer.model", "TOKENIZER_MODEL": "tokenizer.model",
    "TRAIN_STEPS": "250000", "train_samples": "300000000", "train_tokens": "300000000000",
    "VOCAB_FILE": "vocab.json", "vocab_path": "vocab.json", "BASE_PATH": "base", "WEIGHT_DECAY": "0.1",
    "ZERO_STAGE": "1", "zero_stage": "1",
}
VARIABLE = re.compile(r"\$\{(\w+)(?::-\"?([^}\"]*)\"?)?\}|\$(\w+)")
MOE_OR_FP8 = re.compile(r"^--(moe-|num-experts|expert-model-parallel|fp8-)")


def expand(value):
    if value is None:
        return []
    value = VARIABLE.sub(lambda m: VALUES.get(m.group(1) or m.group(3)) or m.group(2) or "x", value)
    return value.split()


def script_argv(script):
    flags = script["flags"] + [f for c in script["conditional_flags"] for f in c["flags"]]
    return [(flag, expand(value)) for flag, value in flags]


def parses(argv):
    try:
        parse_args(argv)
        return None
    except SystemExit:
        return "error"


def refused_flags(script, capsys):
    """Parse the script's flags; take out each refused flag (printing its reason) until the
    rest parses. Returns {flag: reason}."""
    pairs = [(f, v) for f, v in script_argv(script) if not MOE_OR_FP8.match(f)]
    refused = {}
    while True:
        argv = [x for f, v in pairs for x in (f, *v)]
        if parses(argv) is None:
            return refused, len(pairs) + len(refused)
        reason = capsys.readouterr().err.strip().splitlines()[-1]
        named = re.search(r"error: (?:unrecognized arguments: )?(--[\w-]+)", reason)
        culprit = named.group(1) if named else None
        assert culprit in {f for f, _ in pairs}, f"{script['name']}: an error that names no flag of the script: {reason}"
        refused[culprit] = reason
        pairs = [(f, v) for f, v in pairs if f != culprit]


def test_megatron_launch_scripts_parse(capsys):
    with open(SCRIPTS) as f:
        scripts = json.load(f)["scripts"]
    total = working = 0
    every_refusal = {}
    for script in scripts:
        refused, count = refused_flags(script, capsys)
        total += count
        working += count - len(refused)
        every_refusal.update(refused)
    # At least 95% of the flags (MoE and fp8 left out) work; the rest are refused with a reason.
    assert working >= 0.95 * total, (working, total, every_refusal)
    for flag, reason in every_refusal.items():
        assert "unrecognized" not in reason, (flag, reason)  # refused with a reason, not unknown
        assert len(reason.split(flag, 1)[1]) > 20, (flag, reason)


def test_moe_and_fp8_are_refused_with_a_reason():
    with pytest.raises(MegatronFlagError, match="--num-experts: this stack trains dense models only"):
        translate(["--num-experts", "8"])
    with pytest.raises(MegatronFlagError, match="--fp8-format: fp8 needs Transformer Engine"):
        translate(["--fp8-format", "hybrid"])
    with pytest.raises(MegatronFlagError, match="--ckpt-format torch_dist: .*--reshard"):
        translate(["--ckpt-format", "torch_dist"])
    with pytest.raises(MegatronFlagError, match="--context-parallel-size 2: no context parallelism"):
        translate(["--context-parallel-size", "2"])


def test_megatron_spellings_map_onto_ours():
    argv, notes = translate(["--use-distributed-optimizer", "--num-key-value-heads", "8", "--norm-epsilon", "1e-6",
                             "--attention-backend", "flash", "--normalization", "rmsnorm", "--num-workers", "4",
                             "--recompute-activations", "--use-mcore-models"])
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "1", "--num-attention-heads", "32",
                         "--hidden-size", "4096", *argv])
    assert config.parallel.zero_stage == 1
    assert config.model.group_query_attention and config.model.num_query_groups == 8
    assert config.model.layernorm_epsilon == 1e-6 and config.model.attention_backend == "sdpa"
    assert config.model.normalization == "RMSNorm" and config.model.recompute_granularity == "selective"
    assert any("--num-workers" in n for n in notes) and any("--use-mcore-models" in n for n in notes)


def test_abbreviations_are_refused(capsys):
    with pytest.raises(SystemExit):
        parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "1", "--num-layer", "3"])
    assert "unrecognized arguments: --num-layer" in capsys.readouterr().err


def test_the_length_of_training_is_required():
    with pytest.raises(LayoutError, match="the length of training is missing: give --train-iters, --train-samples"):
        resolve_layout(parse_args([*TOY_MODEL, "--data-path", "x"]), 1)


def test_the_model_shape_is_required(capsys):
    """Megatron requires --num-layers, --hidden-size, --num-attention-heads and --seq-length: a
    run without them is refused, not given a toy model."""
    with pytest.raises(SystemExit):
        parse_args(["--data-path", "x", "--train-iters", "1", "--num-layers", "2", "--hidden-size", "64"])
    assert "--num-attention-heads, --seq-length required" in capsys.readouterr().err
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "1"])
    assert (config.model.num_layers, config.model.hidden_size, config.model.num_attention_heads,
            config.model.seq_length) == (2, 128, 4, 128)


def test_use_checkpoint_args_takes_the_model_from_the_checkpoint(tmp_path, capsys):
    """--use-checkpoint-args reads the model's flags from --load's newest checkpoint (metadata.json),
    in place of the command line's; dropout and how the model runs stay the command line's."""
    from megatron_dga.config import ModelConfig

    saved = dataclasses.asdict(ModelConfig(num_layers=6, hidden_size=96, num_attention_heads=3, seq_length=64,
                                           swiglu=True, hidden_dropout=0.3))
    folder = tmp_path / "iter_0000020"
    folder.mkdir()
    (folder / "metadata.json").write_text(json.dumps({"iteration": 20, "model": saved}))
    (tmp_path / "latest_checkpointed_iteration.txt").write_text("20\n")
    config, notes = parse_args_with_notes(["--data-path", "x", "--train-iters", "1", "--load", str(tmp_path),
                                           "--use-checkpoint-args", "--num-layers", "2", "--hidden-dropout", "0"])
    m = config.model
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.seq_length, m.swiglu) == (6, 96, 3, 64, True)
    assert m.hidden_dropout == 0.0
    assert notes == ["--use-checkpoint-args: --num-layers 6 from the checkpoint, not 2"]
    with pytest.raises(SystemExit):
        parse_args(["--data-path", "x", "--train-iters", "1", "--use-checkpoint-args", "--load", str(tmp_path / "no")])
    assert "--use-checkpoint-args: no checkpoint in" in capsys.readouterr().err


def test_no_save_optim_is_refused_with_the_tool_that_writes_weights_alone():
    with pytest.raises(MegatronFlagError, match="--no-save-optim: .*tools/merge_checkpoint.py"):
        translate(["--no-save-optim"])


def test_lengths_in_samples_and_tokens_become_iterations():
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--global-batch-size", "32", "--micro-batch-size", "4",
                         "--seq-length", "128", "--train-samples", "3200", "--lr-warmup-samples", "320",
                         "--lr-decay-samples", "2560"])
    resolve_layout(config, 2)
    assert (config.training.train_iters, config.optimizer.lr_warmup_iters, config.optimizer.lr_decay_iters) == \
        (100, 10, 80)
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--global-batch-size", "32", "--micro-batch-size", "4",
                         "--seq-length", "128", "--train-tokens", "409600", "--lr-warmup-fraction", "0.05"])
    resolve_layout(config, 2)
    assert (config.training.train_iters, config.optimizer.lr_warmup_iters) == (100, 5)
    with pytest.raises(LayoutError, match="--train-iters and --train-samples give the same length twice"):
        resolve_layout(parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "5", "--train-samples", "10"]), 1)


def test_decoupled_lr_gives_the_embedding_its_own_schedule():
    import torch

    from megatron_dga.config import OptimizerConfig
    from megatron_dga.training.optimizer import build_optimizer, build_scheduler

    model = torch.nn.Module()
    model.word_embeddings = torch.nn.Embedding(10, 4)
    model.linear = torch.nn.Linear(4, 4)
    config = OptimizerConfig(lr=1e-3, min_lr=1e-4, decoupled_lr=5e-3, decoupled_min_lr=5e-4, lr_warmup_iters=0,
                             lr_decay_style="cosine")
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, train_iters=10)
    for _ in range(10):
        scheduler.step(1)
    rates = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert rates[id(model.word_embeddings.weight)] == pytest.approx(5e-4)
    assert rates[id(model.linear.weight)] == pytest.approx(1e-4)


def test_megatron_model_flags_train(tmp_path):
    """A run with Megatron's model and schedule flags: LayerNorm1P, QK layer norm, partial RoPE,
    the fused cross entropy, the WSD schedule in samples, SGD, and the console line and the
    TensorBoard scalars Megatron writes, with throughput and the parameters' norm."""
    manifest = make_domains(str(tmp_path / "data"))
    metrics = str(tmp_path / "metrics.jsonl")
    result = pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2",
                       "--global-batch-size", "4", "--train-samples", "24", "--split", "90,10,0",
                       "--apply-layernorm-1p", "--qk-layernorm", "--position-embedding-type", "rope",
                       "--rotary-percent", "0.5", "--cross-entropy-loss-fusion", "--lr-decay-style", "WSD",
                       "--lr-wsd-decay-samples", "8", "--lr-warmup-samples", "4", "--use-mcore-models",
                       "--log-interval", "2", "--eval-interval", "6", "--log-throughput", "--log-params-norm",
                       "--log-validation-ppl-to-tensorboard", "--tensorboard-dir", str(tmp_path / "tb"),
                       "--metrics-file", metrics])
    assert "note: --use-mcore-models: the model is always megatron-core's layers" in result.stdout
    line = next(ln for ln in result.stdout.splitlines() if " iteration        6/       6 |" in ln)
    assert re.search(r"^ \[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] iteration        6/       6 \| consumed samples:\s+24 \| "
                     r"elapsed time per iteration \(ms\): [\d.]+ \| throughput per GPU \(TFLOP/s/GPU\): [\d.]+ \| "
                     r"learning rate: \d\.\d{6}E[-+]\d\d \| global batch size:\s+4 \| lm loss: \d\.\d{6}E[-+]\d\d \| "
                     r"loss scale: 1\.0 \| grad norm: [\d.]+ \| params norm: [\d.]+ \| number of skipped iterations:"
                     r"\s+0 \| number of nan iterations:\s+0 \|", line), line
    assert re.search(r"validation loss at iteration 6 \| lm loss value: \d\.\d{6}E[-+]\d\d \| lm loss PPL: ",
                     result.stdout)
    records = read_metrics(metrics)
    assert all(math.isfinite(r["lm_loss"]) for r in records) and records[-1]["throughput"] > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ("lm loss", "throughput", "params-norm", "loss-scale", "lm loss validation ppl"):
        assert tag in tags, tag
    by_samples = EventAccumulator(str(tmp_path / "tb" / "vs-samples"))  # a folder of their own
    by_samples.Reload()
    assert {"lm loss vs samples", "learning-rate vs samples"} <= set(by_samples.Tags()["scalars"])
    assert [e.step for e in by_samples.Scalars("lm loss vs samples")] == [8, 16, 24]


def test_null_tokenizer_and_mock_data_train(tmp_path):
    """Megatron's --mock-data with NullTokenizer (the Llama-3 example's default): random tokens of
    --vocab-size ids; the model's vocabulary is that plus the end of document."""
    result = pretrain([*SMALL_MODEL, "--mock-data", "--tokenizer-type", "NullTokenizer", "--vocab-size", "100",
                       "--micro-batch-size", "2", "--global-batch-size", "4", "--train-iters", "3",
                       "--split", "99,1,0", "--log-interval", "1", "--eval-interval", "100",
                       "--metrics-file", str(tmp_path / "m.jsonl")])
    assert "vocabulary 128 (padded)" in result.stdout
    assert len(read_metrics(str(tmp_path / "m.jsonl"))) == 3


def wandb_history(run_file):
    """{step: {key: value}} of an offline W&B run file (.wandb: a 7-byte header, then LevelDB's
    log format of protobuf records)."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = open(run_file, "rb").read()
    assert data[:4] == b":W&B"
    history, pos, block, pending = {}, 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length, kind = struct.unpack("<HB", data[pos + 4: pos + 7])
        chunk, pos = data[pos + 7: pos + 7 + length], pos + 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                history.setdefault(row["_step"], {}).update(row)
            pending = b""
    return history


def test_wandb_gets_the_scalars_tensorboard_gets(tmp_path):
    import glob

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    manifest = make_domains(str(tmp_path / "data"))
    pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
              "--train-iters", "4", "--split", "90,10,0", "--log-interval", "2", "--eval-interval", "4",
              "--tensorboard-dir", str(tmp_path / "tb"), "--wandb-project", "megatron-dga-test",
              "--wandb-exp-name", "run", "--wandb-save-dir", str(tmp_path / "wandb")],
             env={"WANDB_MODE": "offline", "WANDB_SILENT": "true"})
    run_file = glob.glob(str(tmp_path / "wandb" / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(run_file) == 1, run_file
    history = wandb_history(run_file[0])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    compared = 0
    for tag in events.Tags()["scalars"]:
        if tag.endswith(" vs samples"):
            continue
        for event in events.Scalars(tag):
            assert history[event.step][tag] == pytest.approx(event.value, rel=1e-6), (tag, event.step)
            compared += 1
    assert compared > 20 and "lm loss validation" in history[4]


def test_eval_iters_is_the_total_shared_by_the_domains():
    """Megatron evaluates --eval-iters global batches of its blended validation set: the domains
    share them here (at least one each); the specific set keeps --eval-iters of its own."""
    import numpy as np

    from megatron_dga.parallel.layout import Layout
    from megatron_dga.training.evaluation import Evaluator, overall_loss

    class Stream:
        samples_per_epoch = 1000

        def sample(self, k):
            return np.full(5, k)

    layout = Layout(2, 1, 1, 2, 2, 8)  # micro batch 2, DP 2, global batch 8: 2 rounds per batch
    sets = {"a": Stream(), "b": Stream(), "c": Stream(), "specific": Stream()}
    evaluator = Evaluator(sets, layout, 0, 4, None, False, shared=["a", "b", "c"])
    assert {n: len(b) for n, b in evaluator.batches.items()} == {"a": 4, "b": 2, "c": 2, "specific": 8}
    # The blended loss weighs each domain by the blend.
    assert overall_loss({"a": 1.0, "b": 3.0, "specific": 9.0}, ["a", "b"], [0.75, 0.25]) == pytest.approx(1.5)


def test_data_path_weights_start_dga_and_are_named_when_unused():
    import numpy as np

    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing

    notes = []
    m = build_mixing(MixingConfig(mixing="dga"), ["a", "b"], [10, 10], [0.2, 0.8], notes=notes, microbatches=(2, 1))
    np.testing.assert_allclose(m.weights(), [0.2, 0.8])
    assert "starts from the --data-path weights" in notes[0]
    notes = []
    build_mixing(MixingConfig(mixing="uniform"), ["a", "b"], [10, 10], [0.2, 0.8], notes=notes)
    assert notes == ["--mixing uniform does not use the --data-path weights"]
