"""Impossible layouts and bad inputs are refused up front with a message naming the flags."""

import os

import pytest

from megatron_dga.arguments import parse_args
from megatron_dga.parallel.layout import LayoutError, resolve_layout
from pretrain_helpers import SMALL_MODEL, TOY_MODEL, make_domains, pretrain, run, torchrun_command


def layout(world_size, *flags):
    return resolve_layout(parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "10", *flags]), world_size)


def test_valid_layout_arithmetic():
    lay = layout(8, "--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                 "--micro-batch-size", "2", "--global-batch-size", "16", "--num-layers", "4")
    assert (lay.tp, lay.pp, lay.dp, lay.grad_accumulation_steps) == (2, 2, 2, 4)


@pytest.mark.parametrize("world_size,flags,message", [
    (3, ["--tensor-model-parallel-size", "2"], "world size 3 is not divisible by --tensor-model-parallel-size 2"),
    (2, ["--micro-batch-size", "3", "--global-batch-size", "8"], "--global-batch-size 8 is not divisible by --micro-batch-size 3"),
    (2, ["--tensor-model-parallel-size", "2", "--num-attention-heads", "3", "--hidden-size", "96"],
     "--num-attention-heads 3 is not divisible by --tensor-model-parallel-size 2"),
    (1, ["--hidden-size", "100", "--num-attention-heads", "8"], "--hidden-size 100 is not divisible by --num-attention-heads 8"),
    (2, ["--pipeline-model-parallel-size", "2", "--num-layers", "3"], "--num-layers 3 is not divisible by --pipeline-model-parallel-size 2"),
    (2, ["--pipeline-model-parallel-size", "2", "--zero-stage", "2"], "--zero-stage 2 does not work with pipeline parallelism"),
    (2, ["--micro-batch-size", "2", "--dga-probe-batch-size", "6"],
     "--dga-probe-batch-size 6 is not a positive multiple of --micro-batch-size 2 x data-parallel size 2"),
    (2, ["--tensor-model-parallel-size", "2", "--sequence-parallel", "--seq-length", "33"],
     "--seq-length 33 is not divisible by --tensor-model-parallel-size 2"),
])
def test_impossible_layouts(world_size, flags, message):
    with pytest.raises(LayoutError, match=message.replace("(", r"\(")):
        layout(world_size, *flags)


def test_sequence_parallelism_needs_tensor_parallelism():
    assert layout(2, "--tensor-model-parallel-size", "2", "--sequence-parallel").sequence_parallel
    assert not layout(2, "--tensor-model-parallel-size", "2").sequence_parallel
    assert not layout(2, "--sequence-parallel").sequence_parallel  # TP=1: ignored (the run says so)


def test_flag_errors_exit_with_usage(capsys):
    with pytest.raises(SystemExit):
        parse_args([*TOY_MODEL, "--data-path", "x", "--bf16", "--fp16"])
    assert "--bf16 and --fp16 are mutually exclusive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(TOY_MODEL)
    assert "give exactly one of --domains-manifest, --data-path and --mock-data" in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ["--tensor-model-parallel-size", "--pipeline-model-parallel-size", "--micro-batch-size",
                 "--global-batch-size", "--train-iters", "--lr", "--min-lr", "--lr-warmup-iters", "--lr-decay-style",
                 "--clip-grad", "--weight-decay", "--seed", "--save", "--load", "--save-interval", "--eval-interval",
                 "--eval-iters", "--log-interval", "--tensorboard-dir", "--bf16", "--fp16", "--zero-stage",
                 "--deepspeed", "--deepspeed_config", "--metrics-file", "--domains-manifest", "--data-path",
                 "--mixing", "--mixture-weights", "--split", "--make-vocab-size-divisible-by"]:
        assert flag in text, flag


def cli_error(args, nproc=1, env=None):
    result = run(torchrun_command(nproc, args), expect_ok=False, env=env)
    assert result.returncode != 0
    return result.stderr


def test_layout_error_before_any_work():
    # WORLD_SIZE as a launcher would set it; the layout is refused before torch.distributed starts.
    err = cli_error([*TOY_MODEL, "--data-path", "x", "--tensor-model-parallel-size", "2"], env={"WORLD_SIZE": "3"})
    assert "error: world size 3 is not divisible by --tensor-model-parallel-size 2" in err


def test_missing_data_file(tmp_path):
    manifest = make_domains(str(tmp_path))
    os.remove(tmp_path / "dom1_text_document.bin")
    err = cli_error(["--domains-manifest", manifest, *SMALL_MODEL, "--train-iters", "1"])
    assert f"domain 'dom1': data file not found: {tmp_path}/dom1_text_document.bin" in err
    err = cli_error([*TOY_MODEL, "--data-path", str(tmp_path / "nothing_here"), "--vocab-size", "256", "--train-iters", "1"])
    assert f"data file not found: {tmp_path}/nothing_here.bin" in err


def test_tokenizer_larger_than_model(tmp_path):
    manifest = make_domains(str(tmp_path))
    err = cli_error(["--domains-manifest", manifest, *SMALL_MODEL, "--vocab-size", "200", "--train-iters", "1"])
    assert "the tokenizer's vocabulary (256 tokens) is larger than the model's --vocab-size 200" in err


def test_checkpoint_from_another_layout_is_refused(tmp_path):
    manifest = make_domains(str(tmp_path / "data"))
    common = ["--domains-manifest", manifest, *SMALL_MODEL, "--train-iters", "2", "--eval-interval", "100",
              "--split", "90,10,0"]
    pretrain([*common, "--save", str(tmp_path / "ck")])
    err = cli_error([*common, "--load", str(tmp_path / "ck"), "--tensor-model-parallel-size", "2"], nproc=2)
    assert "was saved with layout TP=1 PP=1 DP=1; this run uses TP=2 PP=1 DP=1" in err


def test_probe_batch_is_the_same_in_every_layout():
    from megatron_dga.parallel.layout import probe_batching

    per_rank = {}
    for world_size in (1, 2, 4):
        config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "1", "--micro-batch-size", "2",
                             "--dga-probe-batch-size", "8"])
        per_rank[world_size] = probe_batching(config.mixing, resolve_layout(config, world_size)).microbatches
    assert per_rank == {1: 4, 2: 2, 4: 1}
    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "1", "--dga-probe-microbatches", "3"])
    assert probe_batching(config.mixing, resolve_layout(config, 4)).microbatches == 3  # per rank, as before


def test_a_probe_batch_below_one_micro_batch_per_rank():
    """--dga-probe-batch-size below --micro-batch-size x DP: one micro batch of B / DP sequences per
    rank, costed in training micro batches by its sequences; refused where it cannot be split, or
    under pipeline parallelism."""
    from megatron_dga.mixing.probe_budget import auto_update_interval
    from megatron_dga.parallel.layout import ProbeBatching, probe_batching

    config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "1", "--micro-batch-size", "8",
                         "--global-batch-size", "32", "--dga-probe-batch-size", "4"])
    batching = probe_batching(config.mixing, resolve_layout(config, 2))
    assert batching == ProbeBatching(microbatches=1, micro_batch_size=2)
    # 8 sets of a quarter micro batch each, against 2 training micro batches per iteration: 10% at T_r = 10.
    assert batching.passes(8) == 0.25
    assert auto_update_interval(7, batching.passes(8), 2, 0.1) == 10
    assert auto_update_interval(7, 1, 2, 0.1) == 40  # a whole micro batch per source
    with pytest.raises(LayoutError, match="nor a multiple of DP 2 below it"):
        layout(2, "--micro-batch-size", "8", "--global-batch-size", "32", "--dga-probe-batch-size", "3")
    with pytest.raises(LayoutError, match="under pipeline parallelism the probes run in micro batches of training's"):
        layout(2, "--micro-batch-size", "8", "--global-batch-size", "32", "--dga-probe-batch-size", "4",
               "--pipeline-model-parallel-size", "2", "--num-layers", "2")


def test_only_probes_the_budget_sized_may_be_cut():
    from megatron_dga.parallel.layout import probes_may_be_cut

    def may_cut(world_size, *flags):
        config = parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "10", "--num-layers", "2", *flags])
        return probes_may_be_cut(config.mixing, resolve_layout(config, world_size))

    assert may_cut(2)
    assert not may_cut(2, "--pipeline-model-parallel-size", "2")  # stages exchange activations of training's shape
    assert not may_cut(1, "--dga-probe-batch-size", "2")
    assert not may_cut(1, "--dga-probe-microbatches", "1")  # given: as given
    assert not may_cut(1, "--dga-update-interval", "10")


def test_the_early_fraction_is_refused_where_it_cannot_act(capsys):
    for flags, named in ((["--dga-update-interval", "10"], "--dga-update-interval"),
                         (["--dga-probe-batch-size", "4"], "--dga-probe-batch-size"),
                         (["--dga-probe-microbatches", "1"], "--dga-probe-microbatches")):
        with pytest.raises(SystemExit):
            parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "10", "--dga-early-fraction", "0.3", *flags])
        assert f"--dga-early-fraction shapes the schedule --dga-probe-budget derives; {named}" in capsys.readouterr().err
    with pytest.raises(LayoutError, match="--dga-early-fraction cuts DGA's probe micro batches, which pipeline"):
        layout(2, "--dga-early-fraction", "0.3", "--pipeline-model-parallel-size", "2", "--num-layers", "2")
    assert layout(2, "--dga-early-fraction", "0", "--pipeline-model-parallel-size", "2", "--num-layers", "2").pp == 2


def test_probe_prefixes_are_refused_where_they_cannot_act(capsys):
    for given in ("--dga-probe-prefixes", "--no-dga-probe-prefixes"):
        with pytest.raises(SystemExit):
            parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "10", given, "--dga-update-interval", "10"])
        assert f"{given} shapes the probes of the schedule --dga-probe-budget derives; --dga-update-interval" \
            in capsys.readouterr().err
    with pytest.raises(SystemExit):  # no early phase: nothing for the prefixes to shape
        parse_args([*TOY_MODEL, "--data-path", "x", "--train-iters", "10", "--dga-probe-prefixes",
                    "--dga-early-fraction", "0"])
    assert "--dga-probe-prefixes shapes the early phase's probes; --dga-early-fraction 0 turns it off" \
        in capsys.readouterr().err
    with pytest.raises(LayoutError, match="--dga-probe-prefixes cuts DGA's probe sequences, which pipeline"):
        layout(2, "--dga-probe-prefixes", "--pipeline-model-parallel-size", "2", "--num-layers", "2")
    assert layout(2, "--no-dga-probe-prefixes", "--pipeline-model-parallel-size", "2", "--num-layers", "2").pp == 2


def test_noise_shrink_needs_two_probe_micro_batches():
    with pytest.raises(LayoutError, match="--dga-noise-shrink needs a standard error"):
        layout(1, "--mixing", "dga", "--specific-data-path", "s", "--dga-noise-shrink")
    assert layout(2, "--mixing", "dga", "--specific-data-path", "s", "--dga-noise-shrink").dp == 2  # two micro batches, one per rank
    layout(1, "--mixing", "dga", "--specific-data-path", "s", "--dga-noise-shrink", "--dga-probe-microbatches", "2")
