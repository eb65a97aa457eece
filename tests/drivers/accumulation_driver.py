"""Accumulate one iteration's gradients through the DeepSpeed engine (bf16), and compare them
with the exact mean of the micro batches' bf16 gradients; write the relative error as JSON.

    accumulation_driver.py OUT.json [pretrain flags]

The engine's backward of every micro batch of the first iteration runs (no optimizer step);
the accumulated gradient is then read where the optimizer keeps it: DeepSpeed's fp32 buffers
(`get_full_hp_grad`, BF16_Optimizer and ZeRO) or `param.grad` (bf16 accumulation). The
reference takes each micro batch's bf16 gradient alone (torch.autograd.grad on the module) and
averages them in float64: the only difference left is how the sum was accumulated.
"""

import json
import sys

import torch

from megatron_dga.arguments import parse_args
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.training.trainer import Trainer


def accumulated(param) -> torch.Tensor:
    if hasattr(param, "_hp_mapping"):
        return param.get_full_hp_grad()
    return param.grad


def main():
    out, argv = sys.argv[1], sys.argv[2:]
    config = parse_args(argv)
    ctx = initialize_parallel(config)
    trainer = Trainer(config, ctx)
    engine, module = trainer.engine.engine, trainer.engine.module
    micro_batches = [mb.to(ctx.device) for mb in trainer.prefetcher.microbatches(0)]
    params = [p for p in module.parameters() if p.requires_grad]

    reference = [torch.zeros(p.numel(), dtype=torch.float64) for p in params]
    for mb in micro_batches:
        loss = module(mb.tokens, mb.labels, mb.loss_mask)
        for total, g in zip(reference, torch.autograd.grad(loss, params)):
            total += g.reshape(-1).double() / len(micro_batches)

    engine.train()
    for mb in micro_batches:
        engine.backward(engine(mb.tokens, mb.labels, mb.loss_mask))
    got = torch.cat([accumulated(p).reshape(-1).double() for p in params])
    want = torch.cat(reference)
    result = {"micro_batches": len(micro_batches), "relative_error": float((got - want).norm() / want.norm()),
              "accumulation_dtype": str(accumulated(params[0]).dtype), "optimizer": type(engine.optimizer).__name__}
    with open(out, "w") as f:
        json.dump(result, f)
    trainer.close()
    destroy_parallel()


if __name__ == "__main__":
    main()
