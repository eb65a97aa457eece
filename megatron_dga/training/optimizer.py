"""AdamW with Megatron's parameter groups and megatron-core's learning-rate schedule.

The optimizer is handed to DeepSpeed, which wraps it for ZeRO and mixed precision. Biases and
normalization weights (1-D parameters) get no weight decay, as in Megatron. The schedule is
megatron-core's `OptimizerParamScheduler` (linear warmup, then constant, linear, cosine or
inverse-square-root decay to --min-lr), stepped once per iteration.
"""

from __future__ import annotations

import torch
from megatron.core.optimizer_param_scheduler import OptimizerParamScheduler

from megatron_dga.config import OptimizerConfig


def is_input_or_output_layer(name: str) -> bool:
    """The word embedding (input, and output when tied) and the untied output layer: what
    Megatron's --decoupled-lr applies to."""
    return "word_embeddings" in name or "output_layer" in name


def parameter_groups(model: torch.nn.Module, config: OptimizerConfig = None):
    """Megatron's groups: no weight decay on biases and norms; with --decoupled-lr the input and
    output layers get their own learning rate (the scheduler reads each group's max_lr, min_lr)."""
    decoupled = config is not None and config.decoupled_lr is not None
    groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (param.ndim > 1, decoupled and is_input_or_output_layer(name))
        groups.setdefault(key, []).append(param)
    result = []
    for (decays, own_lr), params in sorted(groups.items(), reverse=True):
        group = {"params": params, "wd_mult": 1.0} if decays else {"params": params, "wd_mult": 0.0, "weight_decay": 0.0}
        if own_lr:
            group.update(max_lr=config.decoupled_lr,
                         min_lr=config.decoupled_min_lr if config.decoupled_min_lr is not None else config.min_lr)
        result.append(group)
    return result


def build_optimizer(model: torch.nn.Module, config: OptimizerConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, config)
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.sgd_momentum, weight_decay=config.weight_decay)
    # The fused CUDA implementation when parameters live on a GPU; the plain one on CPU.
    on_gpu = next(model.parameters()).is_cuda
    return torch.optim.AdamW(
        groups,
        lr=config.lr,
        betas=(config.adam_beta1, config.adam_beta2),
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        fused=True if on_gpu else None,
    )


def build_scheduler(optimizer, config: OptimizerConfig, train_iters: int) -> OptimizerParamScheduler:
    decay_iters = config.lr_decay_iters or train_iters
    if config.lr_warmup_iters >= max(decay_iters, 1):
        raise ValueError(
            f"--lr-warmup-iters {config.lr_warmup_iters} must be smaller than the decay length "
            f"{decay_iters} (--lr-decay-iters, default --train-iters)"
        )
    scheduler = OptimizerParamScheduler(
        optimizer,
        init_lr=0.0 if config.lr_warmup_iters > 0 else config.lr,
        max_lr=config.lr,
        min_lr=config.min_lr,
        lr_warmup_steps=config.lr_warmup_iters,
        lr_decay_steps=max(decay_iters, 1),
        lr_decay_style=config.lr_decay_style,
        start_wd=config.weight_decay,
        end_wd=config.weight_decay,
        wd_incr_steps=max(train_iters, 1),
        wd_incr_style="constant",
        use_checkpoint_opt_param_scheduler=not config.override_opt_param_scheduler,
        override_opt_param_scheduler=config.override_opt_param_scheduler,
        wsd_decay_steps=config.lr_wsd_decay_iters,
        lr_wsd_decay_style=config.lr_wsd_decay_style if config.lr_decay_style == "WSD" else None,
    )
    scheduler.step(0)  # set the learning rate of iteration 0
    return scheduler


def current_lr(optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
