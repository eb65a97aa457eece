"""Memory per GPU of a run, from its model and layout, before it is launched.

For the most loaded pipeline stage (the first: it holds the embedding and, under 1F1B, the
activations of PP micro batches in flight) the estimate adds:

- **parameters**, counted exactly from the shapes megatron-core builds: tensor-parallel
  weights divided by TP, norms and row-parallel biases replicated;
- **gradients**, in the training dtype, divided over data-parallel ranks with ZeRO-2, plus
  their fp32 copies in mixed precision (the whole model's with ZeRO-0, this rank's partition
  with ZeRO-1/2);
- **optimizer state**: Adam's two moments, plus fp32 master weights in bf16/fp16, divided over
  data-parallel ranks with ZeRO-1/2 and with DeepSpeed's bf16 optimizer (bf16 with PP);
- **activations** kept for the backward pass, per layer and micro batch, by the count of
  Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models" (2022),
  generalised to grouped-query attention, SwiGLU and any MLP width: tensors inside the TP
  region are divided by TP, and with sequence parallelism the others too; attention scores
  (5 a s^2 b 16-bit units) are not kept with selective recompute or with a fused SDPA kernel
  on GPU; full recompute keeps only each layer's input (plus one layer's activations while it
  is recomputed);
- the **backward pass's temporaries**: while a layer is back-propagated, gradients of the size
  of its activations, and where attention scores are materialised two more score-sized
  tensors (the masked scores, the softmax's gradient);
- the **logits and loss** of a micro batch on the last stage (one fp32 buffer: the logits,
  then in place their softmax and gradient; plus the half-precision gradient in bf16/fp16).

With `--mixing dga` it adds what an update needs on top of the memory held between steps
(parameters, optimizer state, the gradient buffers that persist: fp32 ones in bf16/fp16, ZeRO's
partitions), `dga (during an update)`:
- the specific direction P g_spe, one buffer of this rank's parameters in fp32 (float64 on the
  CPU), two with `--dga-alignment cosine` (a source's own gradient, for its norm);
- the gradient of the largest parameter while it is dotted in, twice (a tied weight's two parts
  are summed), in the training dtype: probes hold no other gradient;
- one probe micro batch's activations, backward temporaries and logits, without selective
  recompute (megatron-core recomputes the core attention only in training mode);
and the run's peak with DGA is the larger of the training step's and the update's.

What it leaves out: the framework's own memory (CUDA context, NCCL buffers, allocator
fragmentation, DeepSpeed's reduce buckets), typically 1-3 GB per GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

from megatron_dga.training.deepspeed_config import effective_zero_stage

GIB = 1024 ** 3


@dataclass
class LayerShapes:
    h: int          # hidden size
    heads: int
    kv: int         # key/value width (heads x head dim, or groups x head dim with GQA)
    ffn: int
    swiglu: bool
    bias: bool
    layernorm: bool  # LayerNorm has a bias; RMSNorm does not


def _shapes(model) -> LayerShapes:
    heads = model.num_attention_heads
    groups = model.num_query_groups if model.group_query_attention else heads
    return LayerShapes(h=model.hidden_size, heads=heads, kv=model.hidden_size // heads * groups,
                       ffn=model.ffn_hidden_size or 4 * model.hidden_size, swiglu=model.swiglu,
                       bias=not model.disable_bias_linear, layernorm=model.normalization == "LayerNorm")


def layer_parameters(s: LayerShapes, tp: int) -> float:
    """Parameters of one transformer layer on one TP rank."""
    fc1 = s.ffn * (2 if s.swiglu else 1)
    sharded = s.h * (s.h + 2 * s.kv) + s.h * s.h + s.h * fc1 + s.ffn * s.h
    if s.bias:
        sharded += (s.h + 2 * s.kv) + fc1           # column-parallel biases are split
    replicated = (2 * s.h if s.bias else 0) + 2 * s.h * (2 if s.layernorm else 1)
    return sharded / tp + replicated


def largest_layer_weight(s: LayerShapes, tp: int) -> float:
    """Elements of the largest weight of a transformer layer on one TP rank."""
    fc1 = s.ffn * (2 if s.swiglu else 1)
    return max(s.h * (s.h + 2 * s.kv), s.h * s.h, s.h * fc1, s.ffn * s.h) / tp


def activation_bytes_per_layer(s: LayerShapes, seq: int, micro_batch: int, tp: int, dtype_bytes: int,
                               keep_scores: bool, sequence_parallel: bool = False) -> float:
    """Bytes one transformer layer keeps for the backward pass, for one micro batch.

    Korthikanti et al. count 16-bit units (2 bytes) plus 1-byte dropout masks; here every
    2-byte tensor takes `dtype_bytes`. With sequence parallelism the tensors outside the TP
    region hold 1/TP of the sequence."""
    sbh = seq * micro_batch * s.h
    unit = dtype_bytes / 2
    fc1 = s.ffn * (2 if s.swiglu else 1)
    # Replicated over TP: the inputs of QKV and FC1, both norms' inputs, two dropout masks.
    replicated = (2 * sbh + 2 * sbh + 2 * 2 * sbh) * unit + 2 * sbh
    # Inside the TP region: Q, K, V, the attention output (input of the projection),
    # FC1's output and the activation's output (input of FC2).
    inside = (2 * sbh + 2 * 2 * seq * micro_batch * s.kv + 2 * sbh
              + 2 * seq * micro_batch * fc1 + 2 * seq * micro_batch * s.ffn) * unit
    if keep_scores:
        # softmax output and its dropout output (2 + 2 units), the dropout mask (1 byte)
        heads_seq2 = s.heads * seq * seq * micro_batch
        inside += 4 * heads_seq2 * unit + heads_seq2
    return replicated / (tp if sequence_parallel else 1) + inside / tp


def estimate(config, world_size: int, on_gpu: bool = True) -> Dict[str, float]:
    """Bytes per GPU of the first pipeline stage (the most loaded), by component."""
    model, par, train = config.model, config.parallel, config.training
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    dp = max(1, world_size // (tp * pp))
    zero = effective_zero_stage(config)  # bf16 with fp32 accumulation runs ZeRO-0 as ZeRO-1
    sp = par.sequence_parallel and tp > 1
    sequence_share = tp if sp else 1  # layer inputs and outputs: [s/TP, b, h] under SP
    s = _shapes(model)
    vocab = config_padded_vocab(config)
    seq, micro = model.seq_length, train.micro_batch_size
    layers = model.num_layers // pp

    embedding = vocab * s.h / tp
    if model.position_embedding_type == "learned_absolute":
        embedding += (model.max_position_embeddings or seq) * s.h
    head = vocab * s.h / tp if (model.untie_embeddings_and_output_weights or pp > 1) else 0.0
    final_norm = s.h * (2 if s.layernorm else 1)
    first_stage = embedding + layers * layer_parameters(s, tp) + (head + final_norm if pp == 1 else 0.0)

    half = train.bf16 or train.fp16
    weight_bytes = 2 if half else 4
    optimizer_bytes = 8 + (4 if half else 0)                # Adam moments (+ fp32 master weights)
    # DeepSpeed shards the optimizer over DP with ZeRO-1/2, and in bf16 with pipeline
    # parallelism (its BF16_Optimizer); bf16/fp16 with ZeRO-0 otherwise keep it whole.
    optimizer_shards = dp if (zero >= 1 or (train.bf16 and pp > 1)) else 1
    # Gradients in the training dtype (split over DP by ZeRO-2), plus fp32 copies in mixed
    # precision: a partition with ZeRO-2 (and ZeRO-1's fp16 optimizer), the whole model's where
    # they are accumulated (DeepSpeed's BF16_Optimizer, bf16 with ZeRO-1 or PP) or copied (ZeRO-0).
    gradients = weight_bytes / (dp if zero >= 2 else 1)
    if half:
        bf16_optimizer = train.bf16 and zero <= 1 and (zero == 1 or pp > 1)
        gradients += 4 / (dp if zero >= 2 or (zero == 1 and not bf16_optimizer) else 1)

    granularity = model.recompute_granularity
    fused_attention = on_gpu and model.attention_backend in ("auto", "sdpa")
    keep_scores = granularity is None and not fused_attention
    per_layer = activation_bytes_per_layer(s, seq, micro, tp, weight_bytes, keep_scores, sp)
    in_flight = pp  # 1F1B: the first stage holds PP micro batches' activations
    layer_input = seq * micro * s.h * weight_bytes / sequence_share
    if granularity == "full":
        activations = in_flight * layers * layer_input + per_layer
    else:
        activations = in_flight * layers * per_layer
    activations += in_flight * layer_input   # the embedding's output
    materialised_scores = not fused_attention
    backward = activation_bytes_per_layer(s, seq, micro, tp, weight_bytes, materialised_scores, sp)
    if materialised_scores:
        backward += 2 * s.heads * seq * seq * micro / tp * weight_bytes
    layer_backward = backward
    if not model.untie_embeddings_and_output_weights and pp == 1:
        # The output layer's part of the tied embedding's gradient is computed first and held
        # until the embedding's own part is added at the end of the backward pass.
        backward += vocab * s.h / tp * weight_bytes
    logits = 0.0
    if pp == 1:
        # megatron-core's cross entropy turns an fp32 copy of the logits into the softmax and
        # then into their gradient in place; in bf16/fp16 the gradient flows back in half precision
        logits = seq * micro * vocab / tp * (4 + (2 if half else 0))
    parts = {
        "parameters": first_stage * weight_bytes,
        "gradients": first_stage * gradients,
        "optimizer": first_stage * optimizer_bytes / optimizer_shards,
        "activations": activations,
        "backward": backward,
        "logits": logits,
        "parameter count (this rank)": first_stage,
    }
    if config.mixing.mixing == "dga":
        # One probe micro batch at a time, in eval mode: full recompute still applies (it
        # follows autograd), selective recompute does not.
        probe_layer = activation_bytes_per_layer(s, seq, micro, tp, weight_bytes, not fused_attention, sp)
        if granularity == "full":
            probe_activations = layers * layer_input + probe_layer
        else:
            probe_activations = layers * probe_layer
        largest = max(vocab * s.h / tp, largest_layer_weight(s, tp))
        buffers = 2 if config.mixing.dga_alignment == "cosine" else 1
        parts["dga (during an update)"] = (buffers * first_stage * (4 if on_gpu else 8)
                                           + 2 * largest * weight_bytes
                                           + probe_activations + layer_input + layer_backward + logits)
        # Between steps: parameters, optimizer state and the gradient buffers that persist
        # (fp32 copies in mixed precision, ZeRO's partitions); plain fp32 gradients are freed.
        persistent_gradients = parts["gradients"] if (half or zero >= 1) else 0.0
        parts["held between steps"] = parts["parameters"] + parts["optimizer"] + persistent_gradients
    return parts


def config_padded_vocab(config) -> int:
    """The model's vocabulary (--vocab-size), padded as the run pads it (to a multiple of
    divisor x TP)."""
    vocab = config.model.vocab_size
    if not vocab:
        raise ValueError("--vocab-size is needed to estimate memory (the tokenizer's vocabulary before padding)")
    from megatron_dga.model.transformer_config import padded_vocab_size

    return padded_vocab_size(vocab, config.model.make_vocab_size_divisible_by,
                             config.parallel.tensor_model_parallel_size)


NOT_SUMMED = ("parameter count (this rank)", "dga (during an update)", "held between steps")


def total(parts: Dict[str, float]) -> float:
    """The training step's peak."""
    return sum(v for k, v in parts.items() if k not in NOT_SUMMED)


def total_with_dga(parts: Dict[str, float]) -> float:
    """The run's peak with DGA: the training step's, or an update's if that is higher."""
    if "dga (during an update)" not in parts:
        return total(parts)
    return max(total(parts), parts["held between steps"] + parts["dga (during an update)"])
