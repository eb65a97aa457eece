"""Hugging Face checkpoints in and out: export a run's checkpoint as a `transformers` model
folder (safetensors, config.json, tokenizer), and initialise a run from one (`--load-hf`).

The weights go through the merged state dict (`export.py`: every tensor-parallel and pipeline
shard put back together) and `model/huggingface.py` (the name and layout mapping).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Dict, Optional

import torch

from megatron_dga.data.tokenizers import build_tokenizer
from megatron_dga.model.huggingface import ExportError, family, from_hf, hf_config, model_overrides, to_hf
from megatron_dga.training.checkpointing import CheckpointError
from megatron_dga.training.export import load_full_weights_into, load_merged_state_dict

TIKTOKEN_TYPES = ("GPT2BPETokenizer", "TikTokenizer")


def _metadata(directory: str) -> dict:
    path = os.path.join(directory, "metadata.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"not a megatron-dga checkpoint (no {path})") from None


def export_tokenizer(tokenizer: Optional[dict], output: str) -> str:
    """Save the run's tokenizer as a transformers fast tokenizer in `output`; what was done."""
    from transformers import PreTrainedTokenizerFast

    if not tokenizer or not tokenizer.get("type"):
        return "no tokenizer recorded in the checkpoint: none exported"
    kind, model = tokenizer["type"], tokenizer.get("model")
    if kind not in ("HuggingFaceTokenizer", *TIKTOKEN_TYPES):
        return f"tokenizer {kind!r} has no transformers counterpart: none exported"
    try:
        ours = build_tokenizer(kind, model)
    except (OSError, ValueError) as e:
        return f"tokenizer {kind} not exported: {e}"
    if kind == "HuggingFaceTokenizer":
        fast = PreTrainedTokenizerFast(tokenizer_file=ours.model_file)
    else:
        from transformers.integrations.tiktoken import TikTokenConverter

        encoding = ours.encoding
        converted = TikTokenConverter(vocab_file=ours.model_file, pattern=encoding._pat_str,
                                      extra_special_tokens=encoding._special_tokens).converted()
        fast = PreTrainedTokenizerFast(tokenizer_object=converted)
    eod = fast.convert_ids_to_tokens(ours.eod)
    fast.eos_token = fast.bos_token = eod
    fast.save_pretrained(output)
    return f"tokenizer {kind} exported (end of document: {eod!r})"


def export_checkpoint(directory: str, output: str) -> Dict[str, str]:
    """Write `output/` (a folder transformers loads) from the checkpoint folder `directory`."""
    metadata = _metadata(directory)
    model = metadata["model"]
    if metadata.get("transformer_impl", "local") != "local":
        raise ExportError(f"{directory} was saved with Transformer Engine's layers: the Hugging Face mapping knows "
                          f"megatron-core's local layer names only (train with --transformer-impl local)")
    vocab = metadata.get("vocab_size")
    if vocab is None:
        raise CheckpointError(f"{directory}/metadata.json has no vocab_size (saved by an older version): "
                              f"it cannot be exported")
    kind = family(model)  # refuses shapes without a counterpart, naming the flags
    merged = load_merged_state_dict(directory)
    state = to_hf(merged, model, vocab)
    config = hf_config(model, vocab)
    config.architectures = ["GPT2LMHeadModel" if kind == "gpt2" else "LlamaForCausalLM"]
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = hf_model.load_state_dict(state, strict=False)
    tied = config.tie_word_embeddings
    unexpected = result.unexpected_keys
    missing = [k for k in result.missing_keys if not (tied and k == "lm_head.weight")]
    if unexpected or missing:
        raise ExportError(f"transformers' {config.architectures[0]} does not match the converted weights: "
                          f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    hf_model.tie_weights()
    staging = output.rstrip("/") + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    hf_model.save_pretrained(staging, safe_serialization=True)
    note = export_tokenizer(metadata.get("tokenizer"), staging)
    if os.path.exists(output):
        shutil.rmtree(output)
    os.replace(staging, output)
    return {"architecture": config.architectures[0], "tokenizer": note, "iteration": str(metadata["iteration"])}


def check_matching_shape(model_config, hf, folder: str) -> None:
    """Every flag the transformers config fixes must be the run's: a silently different model
    is the failure to avoid."""
    wanted = model_overrides(hf)
    for field, value in wanted.items():
        ours = getattr(model_config, field)
        if field == "max_position_embeddings":
            ours = ours or model_config.seq_length
            if value < ours:
                raise CheckpointError(f"--load-hf {folder}: it has {value} positions, this run needs {ours}")
            continue
        if field == "ffn_hidden_size":
            ours = ours or 4 * model_config.hidden_size
        if isinstance(value, float) and isinstance(ours, (int, float)):
            same = abs(value - ours) <= 1e-12 * max(1.0, abs(value))
        else:
            same = ours == value
        if not same:
            flag = "--" + field.replace("_", "-")
            raise CheckpointError(f"--load-hf {folder}: its config.json gives {field} = {value!r}, but this run "
                                  f"has {flag} {ours!r}: give the same model shape")


def load_hf_weights(module: torch.nn.Module, folder: str, model_config, padded_vocab: int, vocab: int,
                    tp: int, tp_rank: int) -> None:
    """Initialise this rank's part of the model from a transformers folder (GPT-2 or Llama)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    from megatron_dga.model.transformer_config import use_transformer_engine

    if use_transformer_engine(model_config):
        raise CheckpointError(f"--load-hf {folder}: the Hugging Face mapping knows megatron-core's local layer "
                              f"names only; use --transformer-impl local")
    try:
        hf = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"--load-hf {folder}: not a transformers model folder ({e})") from None
    check_matching_shape(model_config, hf, folder)
    if hf.vocab_size > padded_vocab:
        raise CheckpointError(f"--load-hf {folder}: vocabulary of {hf.vocab_size} tokens, this run's model has "
                              f"{vocab} ({padded_vocab} padded): use the same tokenizer")
    state: Dict[str, torch.Tensor] = {}
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    if not files:
        raise CheckpointError(f"--load-hf {folder}: no .safetensors weights")
    for name in files:
        state.update(load_file(os.path.join(folder, name)))
    from dataclasses import asdict

    full = from_hf(state, asdict(model_config), padded_vocab)
    load_full_weights_into(module, full, tp, tp_rank, f"--load-hf {folder}")
