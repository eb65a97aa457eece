"""Probe gradients under pipeline parallelism: this stage's gradients, with the micro batches
run through DeepSpeed's pipeline engine.

All the micro batches of a call go through the engine in one training schedule (the same sends
and receives of activations and gradients between stages) minus the gradient all-reduce and the
optimizer step, with forward and backward instructions that run the stage's module directly and
hand each parameter's gradient to the tap (`gradients.GradientTap`) instead of accumulating it.
Each stage runs its backward passes in micro-batch order, so the tap's micro index is the micro
batch's. The two copies of the tied embedding (first and last stage) each get their own stage's
part of its gradient; `reduce_tied` sums a buffer's parts over their group.
"""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from deepspeed.runtime.pipe import schedule as pipe_schedule
from deepspeed.runtime.utils import PartitionedTensor

from megatron_dga.data.batches import MicroBatch
from megatron_dga.mixing.gradients import Consume, FlatGradient, GradientTap, ProbeGradients, engine_loss_scale


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
        self.tap = GradientTap(self.params)
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
        """The pipeline's backward instruction, handing gradients to the tap instead of
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
        self.tap.micro = self._backward_count
        grads = torch.autograd.grad(outputs, wrt, grad_outputs=grad_outputs, allow_unused=True)
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

    def run(self, micro_batches: List[MicroBatch], consume: Consume) -> None:
        engine = self.engine
        self._backward_count, self._scale = 0, engine_loss_scale(engine)
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
            with self.tap.tapping(consume) as tap:
                tap.unscale = 1.0 / self._scale
                engine._exec_schedule(schedule)
        finally:
            del engine._INSTRUCTION_MAP  # back to the class's map
            self.module.train(was_training)
            engine.total_loss = None
        assert self._backward_count == len(micro_batches), (self._backward_count, len(micro_batches))
