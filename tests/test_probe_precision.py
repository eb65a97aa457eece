"""fp16 probes scale the loss as DeepSpeed's engine does, and unscale into the fp32 buffer.

DeepSpeed runs fp16 only on accelerators, so this checks the probe path itself on a small fp16
model on the CPU: gradients that underflow in half precision without scaling come out right
with the engine's loss scale.
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
