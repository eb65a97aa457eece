"""Gradients of the loss on probe micro batches, one parameter at a time, without touching
training state or holding a parameter-sized gradient.

A probe must leave the optimizer (its moments, ZeRO partitions, bf16 master gradients), the
loss scale and the gradient buffers as they were. So probe gradients are never accumulated
into `param.grad`, where DeepSpeed's hooks would pick them up: the backward pass is
`torch.autograd.grad`, and while a probe runs a hook on every parameter (`GradientTap`) hands
that parameter's gradient to `consume(micro batch, parameter index, gradient, unscale)` the
moment autograd has it, then replaces it with a zero-stride zero. The caller dots it into a
buffer or adds it to one, in fp32 (float64 on the CPU) whatever the training dtype; nothing
keeps it, so a probe adds one parameter's gradient to the memory of a backward pass, not the
model's. Dropout is off during probes: the gradient is that of the model, not of one mask.

With fp16 the loss is multiplied by the engine's current loss scale before the backward, as
DeepSpeed does for training, so that small gradients do not underflow in half precision;
`unscale` (1 / scale) brings them back in the fp32 buffers. An overflow gives a non-finite
alignment, and the mixture update is skipped.

The forward pass calls the model itself, never `engine.forward`: DeepSpeed's engine hooks the
outputs of its forward so that their backward steps its ZeRO and loss-scaling bookkeeping.
Without pipeline parallelism that is a forward and an autograd call per micro batch; with it,
`pipeline_probes.py` runs the micro batches through DeepSpeed's pipeline engine.
"""

from __future__ import annotations

import contextlib
from typing import Callable, List

import torch

from megatron_dga.data.batches import MicroBatch

# consume(micro batch index, parameter index, gradient of that parameter, unscale)
Consume = Callable[[int, int, torch.Tensor, float], None]

# Elements converted to the buffer's dtype at a time: a vocabulary-sized embedding is most of a
# small model, and a whole float64 copy of its gradient would be a second buffer.
CHUNK = 1 << 22


def chunks(*tensors: torch.Tensor):
    """Matching flat slices of same-length tensors, CHUNK elements at a time."""
    n = tensors[0].numel()
    for start in range(0, n, CHUNK):
        yield tuple(t[start: start + CHUNK] for t in tensors)


class FlatGradient:
    """Layout of this rank's trainable parameters in one flat buffer (the specific direction)."""

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

    def view(self, flat: torch.Tensor, param_index: int) -> torch.Tensor:
        lo, hi = self.offsets[param_index]
        return flat[lo:hi]

    def add_(self, flat: torch.Tensor, index: int, grad: torch.Tensor, scale: float) -> None:
        """flat[parameter index] += scale * grad, in the buffer's dtype."""
        for target, piece in chunks(self.view(flat, index), grad.reshape(-1)):
            target.add_(piece.to(self.dtype), alpha=scale)

    def dot(self, flat: torch.Tensor, index: int, grad: torch.Tensor) -> torch.Tensor:
        """<flat[parameter index], grad>, in the buffer's dtype."""
        total = torch.zeros((), dtype=self.dtype, device=flat.device)
        for target, piece in chunks(self.view(flat, index), grad.reshape(-1)):
            total += torch.dot(target, piece.to(self.dtype))
        return total


class GradientTap:
    """While `tapping(consume)` is active, each gradient autograd computes for one of the
    parameters goes to `consume` and is replaced by a zero-stride zero (no memory): what
    `torch.autograd.grad` then returns for the parameters holds nothing. A tied parameter's
    hook runs once, with its summed gradient. `micro` and `unscale` say which micro batch the
    backward belongs to, and by what its gradients are to be multiplied."""

    def __init__(self, params: List[torch.nn.Parameter]):
        self.params = params
        self.micro, self.unscale = 0, 1.0
        self._consume: Consume = None

    def _hook(self, index: int):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            self._consume(self.micro, index, grad, self.unscale)
            return torch.zeros((), dtype=grad.dtype, device=grad.device).expand(grad.shape)
        return hook

    @contextlib.contextmanager
    def tapping(self, consume: Consume):
        self._consume = consume
        handles = [p.register_hook(self._hook(i)) for i, p in enumerate(self.params)]
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            self._consume = None


def engine_loss_scale(engine) -> float:
    """The loss scale DeepSpeed multiplies training losses by (1 without fp16)."""
    if engine is None or not engine.fp16_enabled():
        return 1.0
    return float(engine.optimizer.loss_scale)


class ProbeGradients:
    """What both kinds share: the parameter layout, the tap, and the mean gradient of micro batches."""

    layout: FlatGradient
    tap: GradientTap

    def run(self, micro_batches: List[MicroBatch], consume: Consume) -> None:
        raise NotImplementedError

    def reduce_tied(self, flat: torch.Tensor) -> None:
        """Sum the parts of tied parameters held by several stages (none without PP)."""

    def mean(self, micro_batches: List[MicroBatch]) -> torch.Tensor:
        """The gradient of the mean loss over the micro batches, accumulated in the flat
        buffer's dtype (fp32 or wider) whatever the training dtype, tied parts summed."""
        flat = self.layout.zeros()
        share = 1.0 / len(micro_batches)
        self.run(micro_batches, lambda micro, index, grad, unscale: self.layout.add_(flat, index, grad, unscale * share))
        self.reduce_tied(flat)
        return flat


class SequentialProbeGradients(ProbeGradients):
    """PP = 1: forward and `torch.autograd.grad` on the model itself."""

    def __init__(self, module: torch.nn.Module, device: torch.device, engine=None):
        self.module = module
        self.engine = engine
        self.params = [p for p in module.parameters() if p.requires_grad]
        self.layout = FlatGradient(self.params, device)
        self.tap = GradientTap(self.params)
        self.device = device

    def run(self, micro_batches: List[MicroBatch], consume: Consume) -> None:
        scale = engine_loss_scale(self.engine)
        was_training = self.module.training
        self.module.eval()
        try:
            with self.tap.tapping(consume) as tap:
                tap.unscale = 1.0 / scale
                for index, mb in enumerate(micro_batches):
                    tap.micro = index
                    mb = mb.to(self.device)
                    loss = self.module(mb.tokens, mb.labels, mb.loss_mask)
                    torch.autograd.grad(loss * scale if scale != 1.0 else loss, self.params, allow_unused=True)
        finally:
            self.module.train(was_training)
