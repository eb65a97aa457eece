"""Hugging Face checkpoints: runs exported with tools/convert_checkpoint.py load in transformers
and compute our logits; transformers models initialise runs (--load-hf) in any layout and
export back to the same tensors."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from pretrain_helpers import SMALL_MODEL, VOCAB, make_domains, pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONVERT = os.path.join(REPO, "tools", "convert_checkpoint.py")
LOGITS = os.path.join(REPO, "tests", "drivers", "logits_driver.py")

SHAPES = {
    "gpt2": [],
    "llama": ["--normalization", "RMSNorm", "--swiglu", "--position-embedding-type", "rope",
              "--disable-bias-linear", "--group-query-attention", "--num-query-groups", "2",
              "--untie-embeddings-and-output-weights"],
}
LAYOUTS = {"single": (1, []), "tp2": (2, ["--tensor-model-parallel-size", "2"]),
           "pp2": (2, ["--pipeline-model-parallel-size", "2"])}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("hf-data")))


def tokens():
    return np.random.default_rng(0).integers(0, VOCAB, (2, 32))


def train(manifest, save, nproc, extra, iters=2):
    pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
              "--train-iters", str(iters), "--split", "100,0,0", "--eval-interval", "1000",
              "--hidden-dropout", "0", "--attention-dropout", "0", "--save", save, *extra], nproc=nproc)


def convert(save, output):
    result = subprocess.run([sys.executable, CONVERT, "--load", save, "--output", output], capture_output=True,
                            text=True)
    return result


def our_logits(checkpoint_dir, tmp_path):
    np.save(tmp_path / "tokens.npy", tokens())
    result = subprocess.run([sys.executable, LOGITS, checkpoint_dir, str(tmp_path / "tokens.npy"),
                             str(tmp_path / "ours.npy")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return np.load(tmp_path / "ours.npy")


def hf_logits(folder):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64).eval()
    with torch.no_grad():
        return model(torch.from_numpy(tokens())).logits.numpy()


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_exported_model_computes_our_logits(tmp_path, manifest, shape, layout):
    nproc, flags = LAYOUTS[layout]
    save = str(tmp_path / "checkpoints")
    train(manifest, save, nproc, [*SHAPES[shape], *flags])
    result = convert(save, str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("GPT2LMHeadModel" if shape == "gpt2" else "LlamaForCausalLM") in result.stdout
    ours = our_logits(os.path.join(save, "iter_0000002"), tmp_path)
    theirs = hf_logits(str(tmp_path / "hf"))
    assert theirs.shape == ours.shape == (2, 32, VOCAB)
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4 * np.abs(ours).max())


def test_shapes_without_a_transformers_class_are_refused(tmp_path, manifest):
    save = str(tmp_path / "checkpoints")
    train(manifest, save, 1, ["--position-embedding-type", "rope"], iters=1)
    result = convert(save, str(tmp_path / "hf"))
    assert result.returncode == 2
    assert "--normalization LayerNorm, GELU (no --swiglu), --position-embedding-type rope: neither GPT-2" in result.stderr
    assert not os.path.exists(tmp_path / "hf")


def test_an_untied_gpt2_run_is_refused_naming_the_flag():
    from dataclasses import asdict

    from megatron_dga.config import ModelConfig
    from megatron_dga.model.huggingface import ExportError, family

    with pytest.raises(ExportError, match="--untie-embeddings-and-output-weights: GPT-2's head"):
        family(asdict(ModelConfig(untie_embeddings_and_output_weights=True)))


def hf_model(shape, folder):
    """A transformers model with random weights, of the test model's size, saved to `folder`."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if shape == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=64, n_layer=2, n_head=4,
                                           activation_function="gelu_new"))
    else:
        model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=160,
                                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                             max_position_embeddings=64, tie_word_embeddings=False,
                                             rope_theta=10000.0))
    with torch.no_grad():  # the layer norms start at 1 and 0: make them count
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(folder)
    return {k: v.clone() for k, v in model.state_dict().items()}


LOAD_FLAGS = {"gpt2": ["--openai-gelu"],
              "llama": ["--normalization", "RMSNorm", "--swiglu", "--position-embedding-type", "rope",
                        "--disable-bias-linear", "--group-query-attention", "--num-query-groups", "2",
                        "--ffn-hidden-size", "160", "--layernorm-epsilon", "1e-6",
                        "--untie-embeddings-and-output-weights"]}


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_a_transformers_model_starts_a_run_in_any_layout(tmp_path, manifest, shape, layout):
    original = hf_model(shape, str(tmp_path / "original"))
    nproc, flags = LAYOUTS[layout]
    save = str(tmp_path / "checkpoints")
    # One iteration at learning rate 0: the weights stay those loaded.
    train(manifest, save, nproc, [*LOAD_FLAGS[shape], *flags, "--load-hf", str(tmp_path / "original"),
                                  "--lr", "0", "--weight-decay", "0"], iters=1)
    ours = our_logits(os.path.join(save, "iter_0000001"), tmp_path)
    np.testing.assert_allclose(ours, hf_logits(str(tmp_path / "original")), rtol=1e-4, atol=1e-4 * np.abs(ours).max())
    assert convert(save, str(tmp_path / "again")).returncode == 0
    from safetensors.torch import load_file

    again = load_file(str(tmp_path / "again" / "model.safetensors"))
    for name, tensor in again.items():
        assert torch.equal(tensor, original[name]), name


def test_a_transformers_model_of_another_shape_is_refused(tmp_path, manifest):
    hf_model("gpt2", str(tmp_path / "original"))
    result = pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--train-iters", "1", "--split", "100,0,0",
                       "--load-hf", str(tmp_path / "original")], expect_ok=False)
    assert result.returncode == 2
    assert "its config.json gives openai_gelu = True, but this run has --openai-gelu False" in result.stderr
