"""Our GPT's full state dict to and from Hugging Face `transformers` checkpoints.

Two families have an exact counterpart in `transformers`:

| run shape (flags) | transformers class |
|---|---|
| LayerNorm, GELU, learned positions, biases (the defaults) | `GPT2LMHeadModel` |
| `--normalization RMSNorm --swiglu --position-embedding-type rope` (biases optional) | `LlamaForCausalLM` |

The mapping, per transformer layer (megatron-core names on the left):
- `linear_qkv` holds, per query group, that group's query heads, then its key head, then its
  value head (each `kv_channels` rows). GPT-2's `c_attn` wants all queries, then all keys,
  then all values, as a Conv1D ([in, out], the transpose of a Linear); Llama has separate
  `q_proj`, `k_proj`, `v_proj`.
- SwiGLU's `linear_fc1` is [gate; up]: Llama's `gate_proj` and `up_proj`.
- The padded rows of the vocabulary (`--make-vocab-size-divisible-by`) are dropped on export
  and filled with zeros on import.
The head is tied to the embedding (`tie_word_embeddings`), or for Llama an untied `lm_head`
(`--untie-embeddings-and-output-weights`). Any other shape is refused with the flag that makes it
differ: a silently wrong model is the failure to avoid.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch

EMBEDDING = "tied_modules.embed.embedding.word_embeddings.weight"
POSITIONS = "tied_modules.embed.embedding.position_embeddings.weight"


def output_layer_name(model: dict) -> str:
    """The untied head's weight in our merged state dict (after the final norm)."""
    return f"{model['num_layers'] + 2}.output_layer.weight"


def untied(model: dict) -> bool:
    return bool(model.get("untie_embeddings_and_output_weights"))


class ExportError(ValueError):
    """A run whose shape has no exact transformers counterpart."""


def family(model: dict) -> str:
    """'gpt2' or 'llama' for a run's model config (the `model` section of its metadata)."""
    norm, swiglu, positions = model["normalization"], model["swiglu"], model["position_embedding_type"]
    for flag, value, plain in (("--apply-layernorm-1p", model.get("apply_layernorm_1p"), False),
                               ("--qk-layernorm", model.get("qk_layernorm"), False),
                               ("--rotary-percent", model.get("rotary_percent", 1.0), 1.0)):
        if value != plain:
            raise ExportError(f"{flag} {value}: neither GPT-2 nor Llama in transformers computes it")
    if norm == "LayerNorm" and not swiglu and positions == "learned_absolute":
        if model["disable_bias_linear"]:
            raise ExportError("--disable-bias-linear: GPT-2 (LayerNorm, GELU, learned positions) has biases in "
                              "every linear layer; a run without them has no GPT-2 counterpart")
        if model.get("group_query_attention"):
            raise ExportError("--group-query-attention: GPT-2 has one key and value head per query head")
        if untied(model):
            raise ExportError("--untie-embeddings-and-output-weights: GPT-2's head is always the word embedding")
        return "gpt2"
    if norm == "RMSNorm" and swiglu and positions == "rope":
        return "llama"
    differs = [f"--normalization {norm}", "--swiglu" if swiglu else "GELU (no --swiglu)",
               f"--position-embedding-type {positions}"]
    raise ExportError(f"{', '.join(differs)}: neither GPT-2 (LayerNorm, GELU, learned_absolute) nor Llama "
                      f"(RMSNorm, --swiglu, rope): no transformers class computes this model")


def _heads(model: dict) -> Tuple[int, int, int]:
    heads = model["num_attention_heads"]
    groups = model["num_query_groups"] if model.get("group_query_attention") else heads
    return heads, groups, model["hidden_size"] // heads


def split_qkv(weight: torch.Tensor, model: dict):
    """megatron-core's interleaved [per group: q heads, k, v] -> (q, k, v), rows in head order."""
    heads, groups, dim = _heads(model)
    per_group = heads // groups
    grouped = weight.reshape(groups, per_group + 2, dim, *weight.shape[1:])
    q = grouped[:, :per_group].reshape(heads * dim, *weight.shape[1:])
    k = grouped[:, per_group].reshape(groups * dim, *weight.shape[1:])
    v = grouped[:, per_group + 1].reshape(groups * dim, *weight.shape[1:])
    return q, k, v


def join_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, model: dict) -> torch.Tensor:
    heads, groups, dim = _heads(model)
    per_group = heads // groups
    rest = q.shape[1:]
    grouped = torch.cat([q.reshape(groups, per_group, dim, *rest), k.reshape(groups, 1, dim, *rest),
                         v.reshape(groups, 1, dim, *rest)], dim=1)
    return grouped.reshape(groups * (per_group + 2) * dim, *rest)


def _ffn(model: dict) -> int:
    return model.get("ffn_hidden_size") or 4 * model["hidden_size"]


def hf_config(model: dict, vocab_size: int):
    """The transformers config of a run's model."""
    from transformers import GPT2Config, LlamaConfig

    heads, groups, dim = _heads(model)
    if family(model) == "gpt2":
        return GPT2Config(
            vocab_size=vocab_size, n_positions=model.get("max_position_embeddings") or model["seq_length"],
            n_embd=model["hidden_size"], n_layer=model["num_layers"], n_head=heads, n_inner=_ffn(model),
            activation_function="gelu_new" if model.get("openai_gelu") else "gelu",
            layer_norm_epsilon=model["layernorm_epsilon"],
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
            bos_token_id=None, eos_token_id=None,
        )
    return LlamaConfig(
        vocab_size=vocab_size, hidden_size=model["hidden_size"], intermediate_size=_ffn(model),
        num_hidden_layers=model["num_layers"], num_attention_heads=heads, num_key_value_heads=groups,
        head_dim=dim, max_position_embeddings=model.get("max_position_embeddings") or model["seq_length"],
        rms_norm_eps=model["layernorm_epsilon"], rope_theta=float(model["rotary_base"]),
        attention_bias=not model["disable_bias_linear"], mlp_bias=not model["disable_bias_linear"],
        tie_word_embeddings=not untied(model), attention_dropout=0.0, bos_token_id=None, eos_token_id=None,
    )


def to_hf(merged: Dict[str, torch.Tensor], model: dict, vocab_size: int) -> Dict[str, torch.Tensor]:
    """transformers' state dict from our merged one (padded vocabulary rows dropped)."""
    kind, ffn, n = family(model), _ffn(model), model["num_layers"]
    out: Dict[str, torch.Tensor] = {}

    def get(name):
        return merged[name].detach().clone()

    def maybe(name):
        return get(name) if name in merged else None

    embedding = get(EMBEDDING)[:vocab_size]
    final = f"{n + 1}.norm"
    if kind == "gpt2":
        out["transformer.wte.weight"] = embedding
        out["transformer.wpe.weight"] = get(POSITIONS)
        for i in range(n):
            ours, hf = f"{i + 1}.layer.", f"transformer.h.{i}."
            q, k, v = split_qkv(get(ours + "self_attention.linear_qkv.weight"), model)
            qb, kb, vb = split_qkv(get(ours + "self_attention.linear_qkv.bias"), model)
            out[hf + "ln_1.weight"] = get(ours + "input_layernorm.weight")
            out[hf + "ln_1.bias"] = get(ours + "input_layernorm.bias")
            out[hf + "attn.c_attn.weight"] = torch.cat([q, k, v]).t().contiguous()
            out[hf + "attn.c_attn.bias"] = torch.cat([qb, kb, vb])
            out[hf + "attn.c_proj.weight"] = get(ours + "self_attention.linear_proj.weight").t().contiguous()
            out[hf + "attn.c_proj.bias"] = get(ours + "self_attention.linear_proj.bias")
            out[hf + "ln_2.weight"] = get(ours + "pre_mlp_layernorm.weight")
            out[hf + "ln_2.bias"] = get(ours + "pre_mlp_layernorm.bias")
            out[hf + "mlp.c_fc.weight"] = get(ours + "mlp.linear_fc1.weight").t().contiguous()
            out[hf + "mlp.c_fc.bias"] = get(ours + "mlp.linear_fc1.bias")
            out[hf + "mlp.c_proj.weight"] = get(ours + "mlp.linear_fc2.weight").t().contiguous()
            out[hf + "mlp.c_proj.bias"] = get(ours + "mlp.linear_fc2.bias")
        out["transformer.ln_f.weight"] = get(final + ".weight")
        out["transformer.ln_f.bias"] = get(final + ".bias")
        out["lm_head.weight"] = embedding
        return out
    out["model.embed_tokens.weight"] = embedding
    for i in range(n):
        ours, hf = f"{i + 1}.layer.", f"model.layers.{i}."
        q, k, v = split_qkv(get(ours + "self_attention.linear_qkv.weight"), model)
        out[hf + "self_attn.q_proj.weight"], out[hf + "self_attn.k_proj.weight"], out[hf + "self_attn.v_proj.weight"] = \
            q, k, v
        out[hf + "self_attn.o_proj.weight"] = get(ours + "self_attention.linear_proj.weight")
        fc1 = get(ours + "mlp.linear_fc1.weight")
        out[hf + "mlp.gate_proj.weight"], out[hf + "mlp.up_proj.weight"] = fc1[:ffn], fc1[ffn:]
        out[hf + "mlp.down_proj.weight"] = get(ours + "mlp.linear_fc2.weight")
        out[hf + "input_layernorm.weight"] = get(ours + "input_layernorm.weight")
        out[hf + "post_attention_layernorm.weight"] = get(ours + "pre_mlp_layernorm.weight")
        qkv_bias = maybe(ours + "self_attention.linear_qkv.bias")
        if qkv_bias is not None:
            qb, kb, vb = split_qkv(qkv_bias, model)
            out[hf + "self_attn.q_proj.bias"], out[hf + "self_attn.k_proj.bias"], out[hf + "self_attn.v_proj.bias"] = \
                qb, kb, vb
            out[hf + "self_attn.o_proj.bias"] = get(ours + "self_attention.linear_proj.bias")
            fc1_bias = get(ours + "mlp.linear_fc1.bias")
            out[hf + "mlp.gate_proj.bias"], out[hf + "mlp.up_proj.bias"] = fc1_bias[:ffn], fc1_bias[ffn:]
            out[hf + "mlp.down_proj.bias"] = get(ours + "mlp.linear_fc2.bias")
    out["model.norm.weight"] = get(final + ".weight")
    out["lm_head.weight"] = get(output_layer_name(model))[:vocab_size] if untied(model) else embedding
    return out


def from_hf(hf: Dict[str, torch.Tensor], model: dict, padded_vocab: int) -> Dict[str, torch.Tensor]:
    """Our full (merged) state dict from transformers' one; the inverse of `to_hf`."""
    kind, n = family(model), model["num_layers"]
    out: Dict[str, torch.Tensor] = {}

    def padded(embedding):
        rows = torch.zeros(padded_vocab, embedding.shape[1], dtype=embedding.dtype)
        rows[: embedding.shape[0]] = embedding
        return rows

    final = f"{n + 1}.norm"
    if kind == "gpt2":
        out[EMBEDDING] = padded(hf["transformer.wte.weight"])
        out[POSITIONS] = hf["transformer.wpe.weight"][: model.get("max_position_embeddings") or model["seq_length"]]
        h = model["hidden_size"]
        for i in range(n):
            ours, src = f"{i + 1}.layer.", f"transformer.h.{i}."
            qkv = hf[src + "attn.c_attn.weight"].t()
            out[ours + "self_attention.linear_qkv.weight"] = join_qkv(qkv[:h], qkv[h:2 * h], qkv[2 * h:], model)
            b = hf[src + "attn.c_attn.bias"]
            out[ours + "self_attention.linear_qkv.bias"] = join_qkv(b[:h], b[h:2 * h], b[2 * h:], model)
            out[ours + "input_layernorm.weight"] = hf[src + "ln_1.weight"]
            out[ours + "input_layernorm.bias"] = hf[src + "ln_1.bias"]
            out[ours + "self_attention.linear_proj.weight"] = hf[src + "attn.c_proj.weight"].t()
            out[ours + "self_attention.linear_proj.bias"] = hf[src + "attn.c_proj.bias"]
            out[ours + "pre_mlp_layernorm.weight"] = hf[src + "ln_2.weight"]
            out[ours + "pre_mlp_layernorm.bias"] = hf[src + "ln_2.bias"]
            out[ours + "mlp.linear_fc1.weight"] = hf[src + "mlp.c_fc.weight"].t()
            out[ours + "mlp.linear_fc1.bias"] = hf[src + "mlp.c_fc.bias"]
            out[ours + "mlp.linear_fc2.weight"] = hf[src + "mlp.c_proj.weight"].t()
            out[ours + "mlp.linear_fc2.bias"] = hf[src + "mlp.c_proj.bias"]
        out[final + ".weight"] = hf["transformer.ln_f.weight"]
        out[final + ".bias"] = hf["transformer.ln_f.bias"]
    else:
        out[EMBEDDING] = padded(hf["model.embed_tokens.weight"])
        for i in range(n):
            ours, src = f"{i + 1}.layer.", f"model.layers.{i}."
            out[ours + "self_attention.linear_qkv.weight"] = join_qkv(
                hf[src + "self_attn.q_proj.weight"], hf[src + "self_attn.k_proj.weight"],
                hf[src + "self_attn.v_proj.weight"], model)
            out[ours + "self_attention.linear_proj.weight"] = hf[src + "self_attn.o_proj.weight"]
            out[ours + "mlp.linear_fc1.weight"] = torch.cat([hf[src + "mlp.gate_proj.weight"],
                                                             hf[src + "mlp.up_proj.weight"]])
            out[ours + "mlp.linear_fc2.weight"] = hf[src + "mlp.down_proj.weight"]
            out[ours + "input_layernorm.weight"] = hf[src + "input_layernorm.weight"]
            out[ours + "pre_mlp_layernorm.weight"] = hf[src + "post_attention_layernorm.weight"]
            if src + "self_attn.q_proj.bias" in hf:
                out[ours + "self_attention.linear_qkv.bias"] = join_qkv(
                    hf[src + "self_attn.q_proj.bias"], hf[src + "self_attn.k_proj.bias"],
                    hf[src + "self_attn.v_proj.bias"], model)
                out[ours + "self_attention.linear_proj.bias"] = hf[src + "self_attn.o_proj.bias"]
                out[ours + "mlp.linear_fc1.bias"] = torch.cat([hf[src + "mlp.gate_proj.bias"],
                                                               hf[src + "mlp.up_proj.bias"]])
                out[ours + "mlp.linear_fc2.bias"] = hf[src + "mlp.down_proj.bias"]
        out[final + ".weight"] = hf["model.norm.weight"]
        if untied(model):
            out[output_layer_name(model)] = padded(hf["lm_head.weight"])
    return {k: v.contiguous() for k, v in out.items()}


def model_overrides(config) -> dict:
    """Our ModelConfig fields that a transformers config (GPT-2 or Llama) fixes, for --load-hf."""
    kind = config.model_type
    if kind == "gpt2":
        if config.activation_function not in ("gelu", "gelu_new", "gelu_pytorch_tanh"):
            raise ExportError(f"GPT-2 activation {config.activation_function!r} is not GELU")
        if not config.tie_word_embeddings:
            raise ExportError("GPT-2 with tie_word_embeddings false: only Llama-shaped runs have an untied head")
        return {"num_layers": config.n_layer, "hidden_size": config.n_embd, "num_attention_heads": config.n_head,
                "ffn_hidden_size": config.n_inner or 4 * config.n_embd, "normalization": "LayerNorm",
                "swiglu": False, "openai_gelu": config.activation_function != "gelu",
                "position_embedding_type": "learned_absolute", "disable_bias_linear": False,
                "group_query_attention": False, "num_query_groups": None,
                "untie_embeddings_and_output_weights": False,
                "layernorm_epsilon": config.layer_norm_epsilon, "max_position_embeddings": config.n_positions}
    if kind == "llama":
        parameters = getattr(config, "rope_parameters", None) or {}
        if parameters.get("rope_type", "default") != "default":
            raise ExportError(f"Llama rope_type {parameters['rope_type']!r}: only the default rotary embedding "
                              f"is supported")
        if getattr(config, "hidden_act", "silu") != "silu":
            raise ExportError(f"Llama hidden_act {config.hidden_act!r}: SwiGLU needs 'silu'")
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        if head_dim * config.num_attention_heads != config.hidden_size:
            raise ExportError(f"head_dim {head_dim} x {config.num_attention_heads} heads != hidden size "
                              f"{config.hidden_size}: not supported")
        groups = config.num_key_value_heads
        return {"num_layers": config.num_hidden_layers, "hidden_size": config.hidden_size,
                "num_attention_heads": config.num_attention_heads,
                "group_query_attention": groups != config.num_attention_heads,
                "num_query_groups": groups if groups != config.num_attention_heads else None,
                "untie_embeddings_and_output_weights": not config.tie_word_embeddings,
                "ffn_hidden_size": config.intermediate_size, "normalization": "RMSNorm", "swiglu": True,
                "openai_gelu": False, "position_embedding_type": "rope",
                "disable_bias_linear": not config.attention_bias, "layernorm_epsilon": config.rms_norm_eps,
                "rotary_base": int(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0))),
                "max_position_embeddings": config.max_position_embeddings}
    raise ExportError(f"model_type {kind!r}: only GPT-2 and Llama checkpoints can be loaded")
