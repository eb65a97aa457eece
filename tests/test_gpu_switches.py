"""The TransformerConfig the GPU path builds, built here on the CPU: every GPU-only switch is one
megatron-core accepts, and computes what the flags ask for."""

import pytest
import torch.nn.functional as F
from megatron.core.transformer.utils import openai_gelu

from megatron_dga.config import ModelConfig
from megatron_dga.model.transformer_config import build_transformer_config
from pretrain_helpers import TOY_MODEL


@pytest.mark.parametrize("flags,fused_on_gpu,on_gpu_activation,on_cpu_activation", [
    # megatron-core's fused bias-GELU is the tanh approximation, not the exact GELU asked for
    ({}, False, F.gelu, F.gelu),
    # and megatron-core refuses it without biases
    ({"disable_bias_linear": True}, False, F.gelu, F.gelu),
    # the fused kernel is the tanh approximation asked for; without it, the tanh GELU itself
    ({"openai_gelu": True}, True, F.gelu, openai_gelu),
    ({"openai_gelu": True, "disable_bias_linear": True}, False, openai_gelu, openai_gelu),
    ({"swiglu": True}, True, F.silu, F.silu),
    ({"swiglu": True, "disable_bias_linear": True}, True, F.silu, F.silu),
])
def test_activation_fusion_only_where_it_computes_the_activation(flags, fused_on_gpu, on_gpu_activation,
                                                                 on_cpu_activation):
    gpu = build_transformer_config(ModelConfig(**flags), tp=1, bf16=True, fp16=False, on_gpu=True)
    assert gpu.bias_activation_fusion is fused_on_gpu
    assert gpu.activation_func is on_gpu_activation
    cpu = build_transformer_config(ModelConfig(**flags), tp=1, bf16=False, fp16=False, on_gpu=False)
    assert cpu.bias_activation_fusion is False
    assert cpu.activation_func is on_cpu_activation


def test_gpu_config_with_grouped_query_attention_and_rope():
    model = ModelConfig(num_attention_heads=8, hidden_size=256, group_query_attention=True, num_query_groups=2,
                        normalization="RMSNorm", swiglu=True, position_embedding_type="rope",
                        disable_bias_linear=True)
    config = build_transformer_config(model, tp=2, bf16=True, fp16=False, on_gpu=True)
    assert config.num_query_groups == 2 and config.bias_activation_fusion and config.bf16


def test_weights_are_initialised_on_the_gpu_unless_asked_otherwise():
    """On a GPU each rank initialises its own shards on the device (megatron-core's GPU path),
    so no host builds full-size fp32 weights; --use-cpu-initialization keeps the CPU path, which
    the CPU always takes (identical weights in every layout)."""
    on_gpu = lambda **flags: build_transformer_config(ModelConfig(**flags), 2, True, False, on_gpu=True)  # noqa
    on_cpu = lambda **flags: build_transformer_config(ModelConfig(**flags), 2, False, False, on_gpu=False)  # noqa
    assert on_gpu().use_cpu_initialization is False
    assert on_gpu(use_cpu_initialization=True).use_cpu_initialization is True
    assert on_cpu().use_cpu_initialization is True
    assert on_cpu(use_cpu_initialization=False).use_cpu_initialization is False


def test_cpu_initialization_flag_has_three_states():
    from megatron_dga.arguments import parse_args

    assert parse_args([*TOY_MODEL, "--data-path", "x"]).model.use_cpu_initialization is None
    assert parse_args([*TOY_MODEL, "--data-path", "x", "--use-cpu-initialization"]).model.use_cpu_initialization is True
    assert parse_args([*TOY_MODEL, "--data-path", "x", "--no-use-cpu-initialization"]).model.use_cpu_initialization is False


@pytest.fixture
def a_gpu_with_transformer_engine(monkeypatch):
    """What a GPU image with Transformer Engine looks like to the layer choice."""
    import megatron_dga.model.transformer_config as tc

    monkeypatch.setattr(tc, "have_transformer_engine", lambda: True)
    monkeypatch.setattr(tc.torch.cuda, "is_available", lambda: True)
    return tc


def test_transformer_engine_is_opt_in(a_gpu_with_transformer_engine):
    """Where Transformer Engine imports and CUDA is present, the default stays megatron-core's
    local layers (the tested path, whose names the checkpoints and the HF mapping know)."""
    tc = a_gpu_with_transformer_engine
    from megatron_dga.arguments import parse_args

    assert parse_args([*TOY_MODEL, "--data-path", "x"]).model.transformer_impl == "local"
    assert tc.layer_implementation(ModelConfig()) == "local"
    assert tc.layer_implementation(ModelConfig(transformer_impl="auto")) == "transformer_engine"
    assert tc.layer_implementation(ModelConfig(transformer_impl="transformer_engine")) == "transformer_engine"


def test_an_attention_backend_transformer_engine_would_ignore_is_refused(a_gpu_with_transformer_engine):
    tc = a_gpu_with_transformer_engine
    with pytest.raises(ValueError, match="--attention-backend sdpa is not used by Transformer Engine"):
        tc.use_transformer_engine(ModelConfig(transformer_impl="transformer_engine", attention_backend="sdpa"))
    assert tc.use_transformer_engine(ModelConfig(transformer_impl="local", attention_backend="sdpa")) is False


def test_checkpoints_resume_only_into_the_layers_they_were_saved_with():
    from megatron_dga.training.checkpointing import CheckpointError, check_same_layers

    check_same_layers({"transformer_impl": "local"}, "local", "ck")
    check_same_layers({}, "local", "ck")  # saved before the choice was recorded: local layers
    with pytest.raises(CheckpointError, match="saved with Transformer Engine's layers, this run uses megatron-core's "
                                              "local layers .* --transformer-impl transformer_engine"):
        check_same_layers({"transformer_impl": "transformer_engine"}, "local", "ck")


def test_transformer_engine_checkpoints_are_not_exported_to_hugging_face(tmp_path):
    import json

    from megatron_dga.model.huggingface import ExportError
    from megatron_dga.training.hf_checkpoint import export_checkpoint

    (tmp_path / "metadata.json").write_text(json.dumps({"model": {}, "transformer_impl": "transformer_engine"}))
    with pytest.raises(ExportError, match="Transformer Engine's layers: the Hugging Face mapping"):
        export_checkpoint(str(tmp_path), str(tmp_path / "hf"))


def test_rng_states_saved_on_another_kind_of_device_are_not_restored(monkeypatch):
    """A CPU checkpoint resumed on a GPU (or the other way round): the model-parallel tracker's
    generator states do not convert, so nothing is restored and the run seeds its generators
    from --seed and the iteration, as after a change of layout."""
    import torch

    from megatron_dga.training import checkpointing

    state = checkpointing.rng_state()
    assert state["device"] == "cpu"
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    assert checkpointing.set_rng_state({**state, "device": "cuda"}) is False
    assert torch.equal(torch.rand(3), expected)  # the generators were left alone
    assert checkpointing.set_rng_state(state) is True


def test_each_process_uses_the_one_gpu_it_sees_or_its_local_rank():
    from megatron_dga.parallel.initialize import gpu_index

    assert gpu_index(3, 8) == 3
    assert gpu_index(3, 1) == 0  # Slurm --gpus-per-task: every task sees its own GPU as device 0
    with pytest.raises(RuntimeError, match="LOCAL_RANK 5 but only 4 GPUs are visible"):
        gpu_index(5, 4)


def test_nccl_errors_raise_in_the_training_thread_unless_the_user_chose():
    from megatron_dga.parallel.initialize import set_nccl_error_handling

    environ = {}
    set_nccl_error_handling(environ)
    assert environ == {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "2"}
    mine = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1"}
    set_nccl_error_handling(mine)
    assert mine["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def test_megatron_cores_unused_gloo_groups_are_not_created(monkeypatch):
    """They fail on hosts whose name resolves to 127.0.1.1 unless GLOO_SOCKET_IFNAME is set, and
    nothing here uses them."""
    import megatron.core.parallel_state as ps

    from megatron_dga.arguments import parse_args
    from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel

    seen = {}
    original = ps.initialize_model_parallel

    def recording(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(ps, "initialize_model_parallel", recording)
    initialize_parallel(parse_args([*TOY_MODEL, "--data-path", "x", "--vocab-size", "64", "--train-iters", "1"]))
    try:
        assert seen.get("create_gloo_process_groups") is False
        assert ps._DATA_PARALLEL_GROUP_GLOO is None
    finally:
        destroy_parallel()


@pytest.mark.parametrize("flag,field", [("--no-bias-dropout-fusion", "bias_dropout_fusion"),
                                        ("--no-bias-swiglu-fusion", "bias_activation_fusion")])
def test_the_jit_fusions_can_be_turned_off(flag, field):
    """megatron-core's torch.compile'd fusions cost a compile on the first iteration and again
    for evaluation and probes: Megatron's flags turn each off."""
    from megatron_dga.arguments import parse_args

    config = parse_args([*TOY_MODEL, "--data-path", "x", "--swiglu", flag]).model
    on = build_transformer_config(ModelConfig(swiglu=True), 1, True, False, on_gpu=True)
    off = build_transformer_config(config, 1, True, False, on_gpu=True)
    assert getattr(on, field) is True and getattr(off, field) is False


@pytest.mark.parametrize("given", [{}, {"WORLD_SIZE": "1"}, {"WORLD_SIZE": "1", "MASTER_PORT": "29999"}])
def test_a_process_without_a_launcher_is_a_world_of_one(monkeypatch, given):
    """No launcher, or a WORLD_SIZE=1 left in a job's environment: rank 0 of one, with a master
    address and port to rendezvous on (a port the user set is kept)."""
    from megatron_dga.parallel import initialize

    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    initialize._default_single_process_env()
    env = initialize.os.environ
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("0", "0", "1", "127.0.0.1")
    assert env["MASTER_PORT"] == given.get("MASTER_PORT", env["MASTER_PORT"]) and int(env["MASTER_PORT"]) > 0


def test_a_launched_world_is_left_as_the_launcher_set_it(monkeypatch):
    from megatron_dga.parallel import initialize

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    initialize._default_single_process_env()
    assert initialize.os.environ["RANK"] == "1" and "MASTER_PORT" not in initialize.os.environ
