"""The log line of an iteration and of a validation, field for field as Megatron writes them,
so that log scrapers keep working, and the quantities only some flags ask for.

    [2026-12-05 12:00:00] iteration      100/   20000 | consumed samples:        25600 | elapsed time per
    iteration (ms): 812.3 | throughput per GPU (TFLOP/s/GPU): 141.2 | learning rate: 6.000000E-04 | global
    batch size:   256 | lm loss: 3.456789E+00 | loss scale: 1.0 | grad norm: 0.812 | params norm: 312.004 |
    number of skipped iterations:   0 | number of nan iterations:   0 | tokens/s: 2580312 | ...

Megatron's fields come first (throughput with --log-throughput, params norm with
--log-params-norm); this stack's own (tokens per second, DGA's mixture) after them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Dict, List, Optional

import torch

from megatron_dga.parallel.reductions import counts_once, local_dot, model_parallel_sum


def model_flops_per_iteration(model, padded_vocab: int, global_batch: int) -> float:
    """Megatron's count of the model FLOPs of one iteration (forward and backward, 3 x the
    forward's 2 FLOPs per multiply-add; recompute not counted): per layer, the QKV and output
    projections, the attention scores and their weighted sum, the MLP (SwiGLU's gate adds half);
    and the logits."""
    s, h, layers = model.seq_length, model.hidden_size, model.num_layers
    heads = model.num_attention_heads
    groups = model.num_query_groups if model.group_query_attention else heads
    ffn = model.ffn_hidden_size or 4 * h
    gated = 1.5 if model.swiglu else 1.0
    per_token_layer = (1 + groups / heads + s / h) + (ffn / h) * gated
    logits = padded_vocab / (2 * layers * h)
    return 12.0 * global_batch * s * layers * h * h * (per_token_layer + logits)


def params_norm(module: torch.nn.Module) -> float:
    """The norm of every parameter of the model, each counted once over TP and PP."""
    params = [p for p in module.parameters() if counts_once(p)]
    return float(model_parallel_sum(local_dot(params, params)).sqrt())


def iteration_line(iteration: int, train_iters: int, consumed: int, seconds: float, learning_rate: float,
                   global_batch: int, loss: float, loss_scale: float, grad_norm: Optional[float],
                   skipped: int, nan: int, throughput: Optional[float] = None,
                   norm_of_params: Optional[float] = None, extra: Optional[Dict[str, str]] = None) -> str:
    line = f" [{datetime.now().strftime('%Y-%m-%d %H:%M:%S')}]"
    line += f" iteration {iteration:8d}/{train_iters:8d} |"
    line += f" consumed samples: {consumed:12d} |"
    line += f" elapsed time per iteration (ms): {seconds * 1000.0:.1f} |"
    if throughput is not None:
        line += f" throughput per GPU (TFLOP/s/GPU): {throughput:.1f} |"
    line += f" learning rate: {learning_rate:.6E} |"
    line += f" global batch size: {global_batch:5d} |"
    line += f" lm loss: {loss:.6E} |"
    line += f" loss scale: {loss_scale:.1f} |"
    if grad_norm is not None:
        line += f" grad norm: {grad_norm:.3f} |"
    if norm_of_params is not None:
        line += f" params norm: {norm_of_params:.3f} |"
    line += f" number of skipped iterations: {skipped:3d} |"
    line += f" number of nan iterations: {nan:3d} |"
    for name, text in (extra or {}).items():
        line += f" {name}: {text} |"
    return line


def validation_lines(iteration: int, loss: Optional[float], per_set: Dict[str, float]) -> List[str]:
    """Megatron's validation block (the blended loss and its perplexity), then each set's loss."""
    body = f" validation loss at iteration {iteration} | "
    if loss is not None:
        body += f"lm loss value: {loss:.6E} | lm loss PPL: {math.exp(min(20.0, loss)):.6E} | "
    body += " | ".join(f"{name}: {value:.4f}" for name, value in per_set.items())
    bar = "-" * min(len(body) + 1, 200)
    return [bar, body, bar]


def optimizer_state_norms(engine, ctx) -> Dict[str, float]:
    """Norms of Adam's first and second moments over the whole model (Megatron-DeepSpeed's
    --log-optimizer-states-to-tensorboard). Each rank sums the squares of the states it holds:
    ZeRO and DeepSpeed's bf16 optimizer partition them over data-parallel ranks (summed over the
    data-parallel group); tensor and pipeline shards are summed over the model-parallel group.
    Parameters replicated over TP are counted on every TP rank."""
    import torch.distributed as dist
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer

    wrapper = engine.optimizer
    inner = getattr(wrapper, "optimizer", wrapper)
    device = ctx.device
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    for state in inner.state.values():
        for i, key in enumerate(("exp_avg", "exp_avg_sq")):
            if key in state:
                sums[i] += state[key].double().pow(2).sum()
    partitioned = engine.zero_optimization_stage() > 0 or isinstance(wrapper, BF16_Optimizer)
    if partitioned and ctx.layout.dp > 1:
        dist.all_reduce(sums, group=ctx.dp_group)
    model_parallel_sum(sums)
    first, second = sums.sqrt().tolist()
    return {"optimizer/exp_avg-norm": first, "optimizer/exp_avg_sq-norm": second}
