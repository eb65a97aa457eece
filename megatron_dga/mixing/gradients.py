"""Gradients of the loss on a few micro batches, without touching training state.

A probe must leave the optimizer (its moments, ZeRO partitions, bf16 master gradients), the
loss scale and the gradient buffers as they were. So probe gradients are never accumulated
into `param.grad`, where DeepSpeed's hooks would pick them up: they are returned by
`torch.autograd.grad` into a flat fp32 buffer of this rank's parameters (this stage's, this
tensor-parallel shard's). Dropout is off during probes: the gradient is that of the model,
not of one dropout mask.

The forward pass calls the model itself, never `engine.forward`: DeepSpeed's engine hooks the
outputs of its forward so that their backward steps its ZeRO and loss-scaling bookkeeping.

Without pipeline parallelism that is a forward and an autograd call per micro batch. With
it, the micro batches go through DeepSpeed's pipeline engine with its own training schedule
(same sends and receives of activations and gradients between stages) minus the gradient
all-reduce and the optimizer step, and with forward and backward instructions that run the
stage's module directly and return gradients instead of accumulating them. The two copies of
the tied embedding (first and last stage) are then summed over their group, as DeepSpeed
does for training gradients.
"""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from deepspeed.runtime.pipe import schedule as pipe_schedule

from megatron_dga.data.batches import MicroBatch


class FlatGradient:
    """Layout of this rank's trainable parameters in one flat buffer."""

    def __init__(self, params: List[torch.nn.Parameter], device: torch.device):
        self.params = params
        self.device = device
        self.dtype = torch.float32 if device.type == "cuda" else torch.float64
        self.offsets = []
        total = 0
        for p in params:
            self.offsets.append((total, total + p.numel()))
            total += p.numel()
        self.numel = total

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.numel, dtype=self.dtype, device=self.device)

    def add_(self, flat: torch.Tensor, grads, scale: float) -> None:
        for (lo, hi), g in zip(self.offsets, grads):
            if g is not None:
                flat[lo:hi].add_(g.reshape(-1).to(self.dtype), alpha=scale)

    def view(self, flat: torch.Tensor, param_index: int) -> torch.Tensor:
        lo, hi = self.offsets[param_index]
        return flat[lo:hi]


class SequentialProbeGradients:
    """PP = 1: forward and `torch.autograd.grad` on the model itself."""

    def __init__(self, module: torch.nn.Module, device: torch.device):
        self.module = module
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.layout = FlatGradient(self.params, device)
        self.device = device

    def __call__(self, micro_batches: List[MicroBatch]) -> torch.Tensor:
        flat = self.layout.zeros()
        was_training = self.module.training
        self.module.eval()
        try:
            for mb in micro_batches:
                mb = mb.to(self.device)
                loss = self.module(mb.tokens, mb.labels, mb.loss_mask)
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
                self.layout.add_(flat, grads, 1.0 / len(micro_batches))
        finally:
            self.module.train(was_training)
        return flat


class _ProbeSchedule(pipe_schedule.TrainSchedule):
    """DeepSpeed's training schedule without gradient reductions and optimizer step."""

    _DROPPED = (pipe_schedule.ReduceTiedGrads, pipe_schedule.ReduceGrads, pipe_schedule.OptimizerStep)

    def steps(self):
        for commands in super().steps():
            yield [c for c in commands if not isinstance(c, self._DROPPED)]


class PipelineProbeGradients:
    """PP > 1: this stage's gradients, the micro batches run through the pipeline engine."""

    def __init__(self, engine, device: torch.device):
        if engine.is_pipe_partitioned or engine.is_grad_partitioned:
            raise ValueError(
                "DGA probes need unpartitioned pipeline activations: set "
                '"pipeline": {"pipe_partitioned": false, "grad_partitioned": false} in the DeepSpeed config'
            )
        self.engine = engine
        self.module = engine.module
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.layout = FlatGradient(self.params, device)
        self._flat = None
        self._scale = 1.0

    def _forward(self, engine, buffer_id: int) -> None:
        """The pipeline's forward instruction, on the module rather than through the engine."""
        inputs = engine.pipe_buffers["inputs"][buffer_id]
        inputs = tuple(t.clone() for t in inputs) if isinstance(inputs, tuple) else inputs.clone()
        outputs = self.module(inputs)
        engine.pipe_buffers["outputs"][buffer_id] = outputs
        if engine.is_last_stage():
            engine.loss = self.module.loss_fn(outputs, engine.pipe_buffers["labels"][buffer_id])

    def _backward(self, engine, buffer_id: int) -> None:
        """The pipeline's backward instruction, returning gradients instead of accumulating."""
        if engine.is_last_stage():
            outputs, grad_outputs = engine.loss, None
        else:
            outputs, grad_outputs = engine.pipe_buffers["outputs"][buffer_id], engine.grad_layer
        inputs = engine.pipe_buffers["inputs"][buffer_id]
        needs_input_grad = torch.is_tensor(inputs) and inputs.requires_grad
        wrt = self.params + ([inputs] if needs_input_grad else [])
        grads = torch.autograd.grad(outputs, wrt, grad_outputs=grad_outputs, allow_unused=True)
        self.layout.add_(self._flat, grads[: len(self.params)], self._scale)
        if needs_input_grad:
            inputs.grad = grads[-1]  # what SendGrad sends to the previous stage
        engine.pipe_buffers["outputs"][buffer_id] = None

    def _reduce_tied(self) -> None:
        for comm in self.module.tied_comms.values():
            for attr in comm["weight_attr"]:
                weight = self.module._recursive_getattr(comm["module"], attr)
                index = next(i for i, p in enumerate(self.params) if p is weight)
                dist.all_reduce(self.layout.view(self._flat, index), group=comm["group"])

    def __call__(self, micro_batches: List[MicroBatch]) -> torch.Tensor:
        engine = self.engine
        self._flat, self._scale = self.layout.zeros(), 1.0 / len(micro_batches)
        schedule = _ProbeSchedule(micro_batches=len(micro_batches), stages=engine.num_stages,
                                  stage_id=engine.stage_id)
        engine.set_dataiterator(iter([mb.as_pipeline_item() for mb in micro_batches]))
        engine._INSTRUCTION_MAP = {
            **type(engine)._INSTRUCTION_MAP,
            pipe_schedule.ForwardPass: lambda engine, buffer_id: self._forward(engine, buffer_id),
            pipe_schedule.BackwardPass: lambda engine, buffer_id: self._backward(engine, buffer_id),
        }
        was_training = self.module.training
        self.module.eval()
        try:
            engine._exec_schedule(schedule)
        finally:
            del engine._INSTRUCTION_MAP  # back to the class's map
            self.module.train(was_training)
            engine.total_loss = None
        self._reduce_tied()
        flat, self._flat = self._flat, None
        return flat
