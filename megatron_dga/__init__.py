"""megatron-dga: GPT pretraining on megatron-core and DeepSpeed with online data mixing
by Dynamic Gradient Alignment (DGA)."""

__version__ = "0.1.0"
