"""Probe gradients in half precision: fp16 probes scale the loss as DeepSpeed's engine does and
unscale into the full-precision buffer; bf16 probes accumulate the specific gradient over micro
batches in that buffer, not in bf16; and no probe holds a parameter-sized gradient.

DeepSpeed runs fp16 only on accelerators, so this checks the probe path itself on small half
precision models on the CPU.
"""

import types

import numpy as np
import torch

from megatron_dga.data.batches import make_microbatch
from megatron_dga.mixing.gradients import SequentialProbeGradients

VOCAB, HIDDEN = 32, 16
LOSS_FACTOR = 1e-7  # makes the gradients of the half-precision logits underflow


class TinyLM(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.head = torch.nn.Linear(HIDDEN, VOCAB)

    def forward(self, tokens, labels, loss_mask):
        logits = self.head(self.embed(tokens)).float()
        losses = torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), reduction="none")
        return LOSS_FACTOR * (losses * loss_mask.reshape(-1)).sum() / loss_mask.sum()


def fp16_engine(scale):
    return types.SimpleNamespace(fp16_enabled=lambda: True, optimizer=types.SimpleNamespace(loss_scale=scale))


def test_fp16_probe_gradients_are_scaled_and_unscaled():
    torch.manual_seed(0)
    reference_model = TinyLM().double()
    half_model = TinyLM().half()
    half_model.load_state_dict({k: v.half() for k, v in reference_model.state_dict().items()})
    rng = np.random.default_rng(0)
    micro_batches = [make_microbatch(rng.integers(0, VOCAB, (4, 9)), None, False) for _ in range(2)]

    reference = SequentialProbeGradients(reference_model, torch.device("cpu")).mean(micro_batches)
    unscaled = SequentialProbeGradients(half_model, torch.device("cpu"), fp16_engine(1.0)).mean(micro_batches)
    scaled = SequentialProbeGradients(half_model, torch.device("cpu"), fp16_engine(2.0 ** 16)).mean(micro_batches)

    def relative_error(x):
        return float((x - reference).norm() / reference.norm())

    assert relative_error(unscaled) > 0.5  # most of it flushed to zero in half precision
    assert relative_error(scaled) < 1e-2  # fp16 rounding only
    assert scaled.dtype == torch.float64  # the buffer is full precision


def test_bf16_probe_gradients_accumulate_in_full_precision():
    """The specific gradient is the mean over 16 micro batches: each micro batch's bf16
    gradient goes into the fp32 (here float64) buffer, so the mean is exact up to the buffer's
    rounding, where a bf16 running sum would be off by its 16 roundings."""
    torch.manual_seed(0)
    model = TinyLM().bfloat16()
    rng = np.random.default_rng(1)
    micro_batches = [make_microbatch(rng.integers(0, VOCAB, (2, 9)), None, False) for _ in range(16)]
    params = list(model.parameters())
    singles = [torch.autograd.grad(model(mb.tokens, mb.labels, mb.loss_mask) / LOSS_FACTOR, params)
               for mb in micro_batches]
    exact = torch.cat([sum(g[i].double() for g in singles).reshape(-1) / 16 for i in range(len(params))])
    running = [torch.zeros_like(p) for p in params]  # what accumulating in bf16 gives
    for grads in singles:
        for total, g in zip(running, grads):
            total += g / 16
    in_bf16 = torch.cat([t.double().reshape(-1) for t in running])

    class Unscaled(torch.nn.Module):  # the same model, without the loss factor
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, tokens, labels, loss_mask):
            return self.inner(tokens, labels, loss_mask) / LOSS_FACTOR

    probed = SequentialProbeGradients(Unscaled(), torch.device("cpu")).mean(micro_batches)

    def relative_error(x):
        return float((x - exact).norm() / exact.norm())

    assert relative_error(in_bf16) > 1e-4
    assert relative_error(probed) < relative_error(in_bf16) / 1000


def test_probes_hold_no_parameter_sized_gradient():
    """Each parameter's gradient is handed over as autograd produces it and replaced by a
    zero-stride zero: what torch.autograd.grad returns holds one element per parameter."""
    torch.manual_seed(0)
    model = TinyLM()
    rng = np.random.default_rng(2)
    micro_batches = [make_microbatch(rng.integers(0, VOCAB, (4, 9)), None, False) for _ in range(2)]
    probes = SequentialProbeGradients(model, torch.device("cpu"))
    returned, seen = [], []
    real_grad = torch.autograd.grad

    def recording_grad(*args, **kwargs):
        grads = real_grad(*args, **kwargs)
        returned.extend(g for g in grads if g is not None)
        return grads

    torch.autograd.grad = recording_grad
    try:
        probes.run(micro_batches, lambda micro, index, grad, unscale: seen.append((micro, index, grad.numel())))
    finally:
        torch.autograd.grad = real_grad
    assert len(returned) == 2 * len(probes.params)
    assert all(g.untyped_storage().nbytes() <= g.element_size() for g in returned)
    # every parameter's whole gradient reached the consumer, once per micro batch
    assert sorted(seen) == sorted((m, i, p.numel()) for m in range(2) for i, p in enumerate(probes.params))
