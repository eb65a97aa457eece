"""The DeepSpeed config of a run: a given `--deepspeed_config` JSON wins, the rest is derived.

Keys that the JSON sets and that also exist as flags (batch sizes, clipping, ZeRO stage,
precision) are copied back into the run's config, so the trainer, the data layout and the
checkpoint all agree with what DeepSpeed does. An `optimizer` or `scheduler` section in the
JSON replaces the built-in AdamW or learning-rate schedule.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch

from megatron_dga.config import PretrainConfig
from megatron_dga.files import read_json
from megatron_dga.parallel.layout import Layout, LayoutError

# DeepSpeed prints its own progress every `steps_per_print` steps; the trainer logs instead.
_QUIET_STEPS_PER_PRINT = 1 << 30
# A clip threshold no gradient reaches: makes DeepSpeed compute the gradient norm for logging
# without changing the update.
NO_CLIP = 1e30


def load_user_config(path: Optional[str]) -> Dict[str, Any]:
    if not path:
        return {}
    user = read_json(path, "--deepspeed_config")
    if not isinstance(user, dict):
        raise ValueError(f"--deepspeed_config {path}: expected a JSON object")
    return user


def apply_user_config(config: PretrainConfig, user: Dict[str, Any]) -> List[str]:
    """Copy the JSON's settings onto the flags they correspond to; one warning for each flag
    whose value the JSON replaces, naming both values."""
    t, o, p = config.training, config.optimizer, config.parallel
    replaced = []

    def take(section, field: str, flag: str, value, key: str):
        if getattr(section, field) != value:
            replaced.append(f"--deepspeed_config's {key} {value} replaces {flag} {getattr(section, field)}")
        setattr(section, field, value)

    if "train_micro_batch_size_per_gpu" in user:
        take(t, "micro_batch_size", "--micro-batch-size", int(user["train_micro_batch_size_per_gpu"]),
             "train_micro_batch_size_per_gpu")
    if "train_batch_size" in user:
        take(t, "global_batch_size", "--global-batch-size", int(user["train_batch_size"]), "train_batch_size")
    if "gradient_clipping" in user:
        take(o, "clip_grad", "--clip-grad", float(user["gradient_clipping"]), "gradient_clipping")
    if "zero_optimization" in user:
        take(p, "zero_stage", "--zero-stage", int(user["zero_optimization"].get("stage", 0)),
             "zero_optimization.stage")
    if "bf16" in user:
        take(t, "bf16", "--bf16", bool(user["bf16"].get("enabled", False)), "bf16.enabled")
    if "fp16" in user:
        take(t, "fp16", "--fp16", bool(user["fp16"].get("enabled", False)), "fp16.enabled")
    return replaced


def accumulates_in_fp32(config: PretrainConfig) -> bool:
    """Megatron's --accumulate-allreduce-grads-in-fp32, on by default with bf16."""
    flag = config.training.accumulate_allreduce_grads_in_fp32
    return config.training.bf16 if flag is None else bool(flag)


def effective_zero_stage(config: PretrainConfig) -> int:
    """The ZeRO stage DeepSpeed runs. bf16 with fp32 accumulation is DeepSpeed's BF16_Optimizer,
    which DeepSpeed builds only as a ZeRO-1 optimizer (its fp32 master weights and Adam moments
    sharded over data-parallel ranks): --zero-stage 0 runs as 1 then."""
    stage = config.parallel.zero_stage
    return 1 if stage == 0 and accumulates_in_fp32(config) else stage


def fp32_accumulation(config: PretrainConfig, user: Dict[str, Any]) -> bool:
    """Whether this run accumulates in fp32. A --deepspeed_config that asks for ZeRO stage 0
    wins, and DeepSpeed accumulates bf16 there: refused if fp32 accumulation was asked for."""
    if not accumulates_in_fp32(config):
        return False
    if int(user.get("zero_optimization", {}).get("stage", 1)) == 0:
        if config.training.accumulate_allreduce_grads_in_fp32:
            raise LayoutError("--accumulate-allreduce-grads-in-fp32: DeepSpeed accumulates bf16 gradients in fp32 "
                              "only with ZeRO 1 or 2, and the --deepspeed_config sets stage 0")
        return False
    return True


def zero_section(stage: int) -> Dict[str, Any]:
    """ZeRO settings. On GPUs, ZeRO-1/2 overlap the gradient reduction with the backward pass
    (`overlap_comm`, on a side stream) and copy gradients into one contiguous buffer as they
    are produced, as Megatron-DeepSpeed's configs do; on the CPU there is no stream to overlap
    on, and DeepSpeed's defaults stay."""
    section: Dict[str, Any] = {"stage": stage}
    if stage in (1, 2) and torch.cuda.is_available():
        section.update(overlap_comm=True, contiguous_gradients=True)
    return section


def derive_config(config: PretrainConfig, layout: Layout, user: Dict[str, Any]) -> Dict[str, Any]:
    """The full ds_config: the JSON's keys, then derived values for the keys it leaves out."""
    t, o = config.training, config.optimizer
    partition_pipeline = layout.tp > 1 and layout.pp > 1 and not layout.sequence_parallel
    derived: Dict[str, Any] = {
        "train_batch_size": layout.global_batch_size,
        "train_micro_batch_size_per_gpu": layout.micro_batch_size,
        "gradient_accumulation_steps": layout.grad_accumulation_steps,
        "gradient_clipping": o.clip_grad if o.clip_grad > 0 else NO_CLIP,
        "zero_optimization": zero_section(effective_zero_stage(config)),
        "bf16": {"enabled": t.bf16},
        "fp16": {"enabled": t.fp16, "loss_scale": 0, "initial_scale_power": 16, "hysteresis": t.hysteresis},
        "steps_per_print": _QUIET_STEPS_PER_PRINT,
        "wall_clock_breakdown": False,
        # Our AdamW is a plain torch optimizer; DeepSpeed's ZeRO wraps it fine.
        "zero_allow_untested_optimizer": True,
        # With TP, stages exchange activations and their gradients cut over the tensor-parallel
        # ranks (each sends 1/TP, the receivers all-gather): less traffic on the inter-stage
        # link, which crosses nodes. The DGA probes' pipeline schedule does the same. Under
        # sequence parallelism the activations are already cut (over the sequence).
        "pipeline": {"pipe_partitioned": partition_pipeline, "grad_partitioned": partition_pipeline},
    }
    if layout.sequence_parallel and layout.pp > 1 \
            and user.get("pipeline", {}).get("pipe_partitioned"):
        raise LayoutError('--sequence-parallel with pipeline parallelism: the DeepSpeed config\'s "pipeline": '
                          '{"pipe_partitioned": true} would cut activations that are already cut over the '
                          'sequence; leave it out')
    if fp32_accumulation(config, user):
        # Megatron's main_grad: every micro batch's bf16 gradient is added into fp32 buffers,
        # which are then all-reduced (in fp32, or in bf16 with --grad-reduce-in-bf16).
        derived["data_types"] = {"grad_accum_dtype": "fp32"}
        derived["communication_data_type"] = "bf16" if t.grad_reduce_in_bf16 else "fp32"
    merged = dict(derived)
    merged.update(user)
    merged.pop("gradient_accumulation_steps", None)
    merged["gradient_accumulation_steps"] = layout.grad_accumulation_steps
    return merged
