"""The DeepSpeed engine behind one interface for both kinds of run.

Without pipeline parallelism the model trains in DeepSpeed's regular engine (ZeRO 0, 1 or 2):
forward, `engine.backward` and `engine.step` per micro batch, the optimizer stepping at the
gradient-accumulation boundary. With pipeline parallelism DeepSpeed's pipeline engine runs the
whole iteration (`train_batch`). Either way the trainer sees `train_step(micro_batches)` and
`eval_loss(micro_batches)`, returning the loss averaged over micro batches and data-parallel
ranks, the same number on every rank.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import List, Optional, Union

import deepspeed
import torch
import torch.distributed as dist

from megatron_dga.config import OptimizerConfig
from megatron_dga.data.batches import MicroBatch
from megatron_dga.model.sequence_parallel import SequenceParallelGradients
from megatron_dga.training.metrics import print_line
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.mpu import MegatronCoreMPU
from megatron_dga.parallel.reductions import global_grad_norm
from megatron_dga.training.optimizer import build_optimizer, build_scheduler


@dataclass
class StepResult:
    """One iteration's outcome. The loss and gradient norm stay where they were computed (a
    device tensor on GPUs) until someone reads them, so that an iteration never waits for the
    device just to report: the trainer reads them at the log interval (`value()`)."""

    loss: Union[torch.Tensor, float]
    grad_norm: Union[torch.Tensor, float, None]
    skipped: bool  # the optimizer skipped the update (fp16 overflow)


def value(x: Union[torch.Tensor, float, None]) -> Optional[float]:
    """A StepResult field as a Python number (a host sync for a device tensor)."""
    return None if x is None else float(x)


def _use_sharding_aware_clipping(engine) -> None:
    """ZeRO-0 fp32 clipping that counts every parameter once across TP and PP.

    DeepSpeed's fp32 `clip_grad_norm_` counts replicated parameters only on model-parallel
    rank 0 of the TP x PP group, which drops the layer norms of later pipeline stages and
    counts the tied embedding twice; its ZeRO and BF16_Optimizer paths get this right (for its
    bf16/fp16 wrapper of ZeRO-0, see below). This replaces
    the engine's fp32 clipping step with the same rule as `parallel.reductions`, and records
    the norm for logging."""

    def clip_fp32_gradients():
        params = [p for p in engine.module.parameters() if p.grad is not None]
        norm = global_grad_norm(params)
        # On the device, without reading the norm on the host: scaling by 1 is exact.
        coefficient = torch.clamp(engine.gradient_clipping() / (norm + 1e-6), max=1.0)
        for p in params:
            p.grad.mul_(coefficient.to(p.grad.dtype))
        engine._global_grad_norm = norm

    engine.clip_fp32_gradients = clip_fp32_gradients


def _mark_gradients_for_unfused_half_precision_norm(engine) -> None:
    """bf16/fp16 with ZeRO-0: make DeepSpeed's gradient norm count every parameter once.

    DeepSpeed's `FP16_UnfusedOptimizer` (its bf16 and fp16 wrapper around a torch optimizer)
    takes the norm of the gradient tensors and decides what to count from attributes that only
    the parameters carry (`tensor_model_parallel`, `ds_pipe_replicated`): on tensor-parallel
    ranks other than 0 it then drops every gradient, shards included, and the norm it logs and
    clips with is too small (by 15% on a TP2 test model). Copying the parameters' markers onto
    their gradients before each step makes its own rule count each once."""
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer

    optimizer = engine.optimizer
    if not isinstance(optimizer, FP16_UnfusedOptimizer):
        return
    original_step = optimizer.step

    def step(*args, **kwargs):
        for group in optimizer.fp16_groups:
            for param in group:
                if param.grad is not None:
                    for marker in ("tensor_model_parallel", "ds_pipe_replicated"):
                        if hasattr(param, marker):
                            setattr(param.grad, marker, getattr(param, marker))
        return original_step(*args, **kwargs)

    optimizer.step = step


def sequence_parallel_sum_point(engine, pipelined: bool) -> Optional[str]:
    """Where the gradients of the parameters replicated over TP can be summed in one all-reduce:
    - "iteration": DeepSpeed reads gradients only at its data-parallel reduction (ZeRO 0, and 1
      without `overlap_comm`; the pipeline engine in fp32 or fp16). `contiguous_gradients` alone
      only copies them there.
    - "micro batch": DeepSpeed's BF16_Optimizer adds each micro batch's gradients into fp32
      buffers right after its backward pass (having cleared them before it).
    - None: DeepSpeed takes each gradient as autograd computes it (ZeRO-2's partitioning,
      `overlap_comm`'s reduction in the boundary micro batch, a separate accumulation dtype's or
      BF16_Optimizer's immediate-update hooks), or, for the pipeline engine in bf16, updates its
      fp32 buffers inside its backward instruction, with no call in between. Each gradient is
      then summed as it is computed."""
    from deepspeed.runtime.bf16_optimizer import BF16_Optimizer

    optimizer = engine.optimizer
    if isinstance(optimizer, BF16_Optimizer):
        return None if optimizer.immediate_grad_update or pipelined else "micro batch"
    if getattr(optimizer, "use_grad_accum_attribute", False):
        return None
    if engine.zero_optimization() and (engine.zero_optimization_partition_gradients() or engine.zero_overlap_comm()):
        return None
    return "iteration"


def _sum_sequence_parallel_gradients_at(engine, gradients: SequenceParallelGradients, point: str) -> None:
    """Megatron's way: one all-reduce of the replicated parameters' partial gradients, made
    while training has deferred the per-parameter sums (`gradients.deferred()`): per iteration
    just before DeepSpeed's data-parallel reduction at the accumulation boundary (every engine,
    the pipeline engine included, runs it through `allreduce_gradients`), or per micro batch at
    the start of the engine's backward epilogue, before BF16_Optimizer moves the gradients."""
    if point == "iteration":
        allreduce_gradients = engine.allreduce_gradients

        def sum_then_allreduce(*args, **kwargs):
            if not gradients.per_parameter and engine.is_gradient_accumulation_boundary():
                gradients.sum_accumulated()
            return allreduce_gradients(*args, **kwargs)

        engine.allreduce_gradients = sum_then_allreduce
    else:
        backward_epilogue = engine._backward_epilogue

        def sum_then_epilogue(*args, **kwargs):
            if not gradients.per_parameter:
                gradients.sum_accumulated()
            return backward_epilogue(*args, **kwargs)

        engine._backward_epilogue = sum_then_epilogue


class TrainingEngine:
    """The DeepSpeed engine of a run, with its optimizer and learning-rate schedule: built from
    the DeepSpeed config derived for the run (training/deepspeed_config.py), the optimizer
    section and the length of training. A --deepspeed_config that names its own optimizer or
    scheduler keeps them."""

    def __init__(self, model: torch.nn.Module, ctx: ParallelContext, ds_config: dict, optimizer: OptimizerConfig,
                 train_iters: int, user_ds_config: dict):
        self.ctx = ctx
        self.pipelined = ctx.layout.pp > 1
        self.ds_config = ds_config
        # The optimizer is built on the device the parameters train on: torch's fused AdamW
        # needs them there (a PipelineModule is still on the CPU until DeepSpeed moves it).
        model.to(ctx.device)
        client_optimizer = None if "optimizer" in user_ds_config else build_optimizer(model, optimizer)
        kwargs = dict(model=model, config=self.ds_config, optimizer=client_optimizer)
        if client_optimizer is None:
            kwargs["model_parameters"] = [p for p in model.parameters() if p.requires_grad]
        if not self.pipelined:
            kwargs["mpu"] = MegatronCoreMPU()
        self.engine, _, _, ds_scheduler = deepspeed.initialize(**kwargs)
        if "scheduler" in user_ds_config:
            self.scheduler = None  # DeepSpeed's own, stepped by the engine
        else:
            self.scheduler = build_scheduler(client_optimizer or self.engine.optimizer, optimizer, train_iters)
        if not (self.engine.zero_optimization() or self.engine.fp16_enabled() or self.engine.bfloat16_enabled()):
            _use_sharding_aware_clipping(self.engine)
        _mark_gradients_for_unfused_half_precision_norm(self.engine)
        self.sequence_parallel_gradients = self._sequence_parallel_sums(model)

    def _sequence_parallel_sums(self, model: torch.nn.Module) -> Optional[SequenceParallelGradients]:
        """Under sequence parallelism: the object whose per-parameter sums training defers to
        one all-reduce, or None where they stay per parameter (DeepSpeed needs them earlier)."""
        gradients = getattr(model, "sequence_parallel_gradients", None)
        if gradients is None:
            return None
        point = sequence_parallel_sum_point(self.engine, self.pipelined)
        if self.ctx.rank == 0:
            how = (f"in one all-reduce per {point}, before DeepSpeed reads them" if point else
                   "each as autograd computes it (DeepSpeed takes gradients during the backward pass)")
            print_line(f"--sequence-parallel: the gradients of {len(gradients.params)} parameters replicated over TP "
                       f"are summed {how}")
        if point is None:
            return None
        _sum_sequence_parallel_gradients_at(self.engine, gradients, point)
        return gradients

    @property
    def module(self) -> torch.nn.Module:
        return self.engine.module

    @property
    def learning_rate(self) -> float:
        return float(self.engine.get_lr()[0])

    def _dp_mean(self, value: torch.Tensor) -> torch.Tensor:
        if self.ctx.layout.dp > 1:
            dist.all_reduce(value, group=self.ctx.dp_group)
            value = value / self.ctx.layout.dp
        return value

    def train_step(self, micro_batches: List[MicroBatch]) -> StepResult:
        sums = self.sequence_parallel_gradients
        with sums.deferred() if sums is not None else contextlib.nullcontext():
            return self._train_step(micro_batches)

    def _train_step(self, micro_batches: List[MicroBatch]) -> StepResult:
        skipped_before = self.engine.skipped_steps
        if self.pipelined:
            loss = self.engine.train_batch(iter([mb.as_pipeline_item() for mb in micro_batches])).detach()
        else:
            self.engine.train()
            total = torch.zeros((), device=self.ctx.device)
            for mb in micro_batches:
                mb = mb.to(self.ctx.device)
                step_loss = self.engine(mb.tokens, mb.labels, mb.loss_mask)
                self.engine.backward(step_loss)
                self.engine.step()
                total += step_loss.detach().float()
            loss = self._dp_mean(total / len(micro_batches))
        if self.scheduler is not None:
            self.scheduler.step(1)
        norm = self.engine.get_global_grad_norm()
        return StepResult(loss, norm, self.engine.skipped_steps > skipped_before)

    @torch.no_grad()
    def eval_loss(self, micro_batches: List[MicroBatch]) -> float:
        if self.pipelined:
            items = iter([mb.as_pipeline_item() for mb in micro_batches])
            return float(self.engine.eval_batch(items, num_micro_batches=len(micro_batches)))
        self.engine.eval()
        total = torch.zeros((), device=self.ctx.device)
        for mb in micro_batches:
            mb = mb.to(self.ctx.device)
            total += self.engine(mb.tokens, mb.labels, mb.loss_mask).float()
        self.engine.train()
        return float(self._dp_mean(total / len(micro_batches)))
