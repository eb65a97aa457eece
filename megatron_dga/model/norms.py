"""Megatron's --apply-layernorm-1p on megatron-core's local (torch) norms.

The norm's weight is stored centred on zero and applied as 1 + weight, which keeps it well
represented in low precision (Megatron's "LayerNorm1P"; megatron-core's fused and Transformer
Engine norms call it zero-centred gamma). megatron-core's torch norm wrapper refuses it, so these
subclasses of torch's LayerNorm and RMSNorm do it, with the same parameter names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from megatron.core.transformer.transformer_config import TransformerConfig


class LayerNorm1P(torch.nn.LayerNorm):
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.weight is not None:
            torch.nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight + 1, self.bias, self.eps)


class RMSNorm1P(torch.nn.RMSNorm):
    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.weight is not None:
            torch.nn.init.zeros_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight + 1, self.eps)


class ZeroCenteredTorchNorm:
    """Built like megatron-core's `WrappedTorchNorm` (the module spec's signature); its
    parameters are marked `sequence_parallel` under sequence parallelism, as megatron-core marks
    its own."""

    def __new__(cls, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **kwargs):
        norm_cls = RMSNorm1P if config.normalization == "RMSNorm" else LayerNorm1P
        norm = norm_cls(hidden_size, eps=eps, dtype=config.params_dtype)
        for param in norm.parameters():
            param.sequence_parallel = config.sequence_parallel
        return norm
