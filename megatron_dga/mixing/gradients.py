"""Gradients of the loss on probe micro batches, one micro batch at a time, without touching
training state.

A probe must leave the optimizer (its moments, ZeRO partitions, bf16 master gradients), the
loss scale and the gradient buffers as they were. So probe gradients are never accumulated
into `param.grad`, where DeepSpeed's hooks would pick them up: `torch.autograd.grad` returns
each micro batch's gradient of this rank's parameters (this stage's, this tensor-parallel
shard's), and `run(micro_batches, visit)` hands it to `visit(index, grads, unscale)` as soon
as it exists. The caller dots it into a buffer or adds it to one; nothing else keeps it.
Dropout is off during probes: the gradient is that of the model, not of one dropout mask.

With fp16 the loss is multiplied by the engine's current loss scale before the backward, as
DeepSpeed does for training, so that small gradients do not underflow in half precision;
`unscale` (1 / scale) brings them back in the fp32 (float64 on CPU) buffers. An overflow gives
a non-finite alignment, and the mixture update is skipped.

The forward pass calls the model itself, never `engine.forward`: DeepSpeed's engine hooks the
outputs of its forward so that their backward steps its ZeRO and loss-scaling bookkeeping.

Without pipeline parallelism that is a forward and an autograd call per micro batch. With
it, all the micro batches of a call go through DeepSpeed's pipeline engine in one training
schedule (same sends and receives of activations and gradients between stages) minus the
gradient all-reduce and the optimizer step, with forward and backward instructions that run
the stage's module directly and return gradients instead of accumulating them. Each stage
runs its backward passes in micro-batch order, so the visit's index is the micro batch's.
The two copies of the tied embedding (first and last stage) each get their own stage's part
of its gradient; `reduce_tied` sums a buffer's parts over their group.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence

import torch
import torch.distributed as dist
from deepspeed.runtime.pipe import schedule as pipe_schedule
from deepspeed.runtime.utils import PartitionedTensor

from megatron_dga.data.batches import MicroBatch

# visit(micro batch index, gradients of this rank's parameters (None where unused), unscale)
Visit = Callable[[int, Sequence[Optional[torch.Tensor]], float], None]


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

    def dot(self, flat: torch.Tensor, grads, scale: float = 1.0) -> torch.Tensor:
        """scale * <flat, grads>, one parameter at a time (no flat copy of grads)."""
        total = torch.zeros((), dtype=self.dtype, device=self.device)
        for (lo, hi), g in zip(self.offsets, grads):
            if g is not None:
                total += torch.dot(flat[lo:hi], g.reshape(-1).to(self.dtype))
        return total * scale

    def view(self, flat: torch.Tensor, param_index: int) -> torch.Tensor:
        lo, hi = self.offsets[param_index]
        return flat[lo:hi]


def engine_loss_scale(engine) -> float:
    """The loss scale DeepSpeed multiplies training losses by (1 without fp16)."""
    if engine is None or not engine.fp16_enabled():
        return 1.0
    return float(engine.optimizer.loss_scale)


class ProbeGradients:
    """What both kinds share: the parameter layout and the mean gradient of micro batches."""

    layout: FlatGradient

    def run(self, micro_batches: List[MicroBatch], visit: Visit) -> None:
        raise NotImplementedError

    def reduce_tied(self, flat: torch.Tensor) -> None:
        """Sum the parts of tied parameters held by several stages (none without PP)."""

    def mean(self, micro_batches: List[MicroBatch]) -> torch.Tensor:
        """The gradient of the mean loss over the micro batches, tied parts summed."""
        flat = self.layout.zeros()
        self.run(micro_batches,
                 lambda index, grads, unscale: self.layout.add_(flat, grads, unscale / len(micro_batches)))
        self.reduce_tied(flat)
        return flat


class SequentialProbeGradients(ProbeGradients):
    """PP = 1: forward and `torch.autograd.grad` on the model itself."""

    def __init__(self, module: torch.nn.Module, device: torch.device, engine=None):
        self.module = module
        self.engine = engine
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.layout = FlatGradient(self.params, device)
        self.device = device

    def run(self, micro_batches: List[MicroBatch], visit: Visit) -> None:
        scale = engine_loss_scale(self.engine)
        was_training = self.module.training
        self.module.eval()
        try:
            for index, mb in enumerate(micro_batches):
                mb = mb.to(self.device)
                loss = self.module(mb.tokens, mb.labels, mb.loss_mask)
                grads = torch.autograd.grad(loss * scale if scale != 1.0 else loss, self.params, allow_unused=True)
                visit(index, grads, 1.0 / scale)
        finally:
            self.module.train(was_training)


class _ProbeSchedule(pipe_schedule.TrainSchedule):
    """DeepSpeed's training schedule without gradient reductions and optimizer step."""

    _DROPPED = (pipe_schedule.ReduceTiedGrads, pipe_schedule.ReduceGrads, pipe_schedule.OptimizerStep)

    def steps(self):
        for commands in super().steps():
            yield [c for c in commands if not isinstance(c, self._DROPPED)]


class PipelineProbeGradients(ProbeGradients):
    """PP > 1: this stage's gradients, the micro batches run through the pipeline engine."""

    def __init__(self, engine, device: torch.device):
        if engine.is_grad_partitioned and not engine.is_pipe_partitioned:
            raise ValueError('"grad_partitioned" needs "pipe_partitioned" in the DeepSpeed config\'s pipeline section')
        self.engine = engine
        self.module = engine.module
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        self.layout = FlatGradient(self.params, device)
        self._visit: Optional[Visit] = None
        self._backward_count = 0
        self._scale = 1.0

    def _forward(self, engine, buffer_id: int) -> None:
        """The pipeline's forward instruction, on the module rather than through the engine.
        With "pipe_partitioned" (TP > 1), stages exchange activations cut over the tensor-
        parallel ranks, as DeepSpeed's own forward does: the received piece is gathered into
        the full input, and the output is cut before it is sent."""
        inputs = engine.pipe_buffers["inputs"][buffer_id]
        inputs = tuple(t.clone() for t in inputs) if isinstance(inputs, tuple) else inputs.clone()
        if engine.is_pipe_partitioned and not engine.is_first_stage():
            piece = PartitionedTensor.from_meta(meta=inputs[0].to("cpu"), local_part=inputs[1],
                                                group=engine.grid.get_slice_parallel_group())
            full = piece.full()
            full.requires_grad = True
            inputs = full if len(inputs) == 2 else (full, *inputs[2:])
            engine.pipe_buffers["inputs"][buffer_id] = inputs  # SendGrad reads its .grad
        outputs = self.module(inputs)
        if engine.is_pipe_partitioned and not engine.is_last_stage():
            first, tail = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
            piece = PartitionedTensor(tensor=first, group=engine.grid.get_slice_parallel_group())
            engine.pipe_buffers["output_tensors"][buffer_id] = first  # whole, for the backward
            outputs = (piece.to_meta(), piece.data(), *tail)
        engine.pipe_buffers["outputs"][buffer_id] = outputs
        if engine.is_last_stage():
            engine.loss = self.module.loss_fn(outputs, engine.pipe_buffers["labels"][buffer_id])

    def _backward(self, engine, buffer_id: int) -> None:
        """The pipeline's backward instruction, handing gradients to the visit instead of
        accumulating them. The loss is scaled on the last stage; the gradients every stage
        receives are then scaled too."""
        if engine.is_last_stage():
            outputs, grad_outputs = engine.loss * self._scale if self._scale != 1.0 else engine.loss, None
        else:
            outputs, grad_outputs = engine.pipe_buffers["outputs"][buffer_id], engine.grad_layer
            if engine.is_pipe_partitioned:  # the whole output, not the piece that was sent
                outputs = (engine.pipe_buffers["output_tensors"][buffer_id], *outputs[2:])
                engine.pipe_buffers["output_tensors"][buffer_id] = None
            if engine.is_grad_partitioned:  # the received gradient is a piece too
                piece = PartitionedTensor.from_meta(meta=grad_outputs[0].to("cpu"), local_part=grad_outputs[1],
                                                    group=engine.grid.get_slice_parallel_group())
                grad_outputs = (piece.full(), *grad_outputs[2:])
            if isinstance(outputs, tuple):  # only the floating outputs carry gradients
                outputs = tuple(t for t in outputs if t.is_floating_point() and t.requires_grad)
                grad_outputs = tuple(grad_outputs) if isinstance(grad_outputs, (tuple, list)) else (grad_outputs,)
        inputs = engine.pipe_buffers["inputs"][buffer_id]
        needs_input_grad = torch.is_tensor(inputs) and inputs.requires_grad
        wrt = self.params + ([inputs] if needs_input_grad else [])
        grads = torch.autograd.grad(outputs, wrt, grad_outputs=grad_outputs, allow_unused=True)
        self._visit(self._backward_count, grads[: len(self.params)], 1.0 / self._scale)
        self._backward_count += 1
        if needs_input_grad:
            inputs.grad = grads[-1]  # what SendGrad sends to the previous stage
        engine.pipe_buffers["outputs"][buffer_id] = None

    def reduce_tied(self, flat: torch.Tensor) -> None:
        for comm in self.module.tied_comms.values():
            for attr in comm["weight_attr"]:
                weight = self.module._recursive_getattr(comm["module"], attr)
                index = next(i for i, p in enumerate(self.params) if p is weight)
                dist.all_reduce(self.layout.view(flat, index), group=comm["group"])

    def run(self, micro_batches: List[MicroBatch], visit: Visit) -> None:
        engine = self.engine
        self._visit, self._backward_count, self._scale = visit, 0, engine_loss_scale(engine)
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
            self._visit = None
        assert self._backward_count == len(micro_batches), (self._backward_count, len(micro_batches))
