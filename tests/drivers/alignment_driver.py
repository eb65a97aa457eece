"""Measure DGA alignment scores once, at the initial weights, and write them as JSON.

    alignment_driver.py OUT.json measure   [pretrain flags]   the AlignmentMeter (linearity
                                                             path) and the full all-reduce path
    alignment_driver.py OUT.json reference [pretrain flags]   brute force in one process: full
                                                             gradients with torch.autograd, dotted
"""

import json
import sys

import torch

from megatron_dga.arguments import parse_args
from megatron_dga.mixing.alignment import full_allreduce_alignment
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.training.trainer import Trainer


def brute_force(trainer):
    module, probes = trainer.engine.module, trainer.alignment.probes
    params = [p for p in module.parameters() if p.requires_grad]
    module.eval()

    def gradient(micro_batches):
        loss = sum(module(mb.tokens, mb.labels, mb.loss_mask) for mb in micro_batches) / len(micro_batches)
        return torch.cat([g.reshape(-1).double() for g in torch.autograd.grad(loss, params)])

    probes.begin_update()
    specific = gradient(probes.specific_microbatches())
    return [float(gradient(probes.source_microbatches(j)) @ specific) for j in range(probes.num_sources)]


def main():
    out, mode, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    config = parse_args(argv)
    ctx = initialize_parallel(config)
    trainer = Trainer(config, ctx)
    result = {}
    if mode == "reference":
        result["scores"] = brute_force(trainer)
    else:
        probes = trainer.alignment.probes
        state = probes.state_dict()
        result["scores"] = trainer.alignment.measure().tolist()
        probes.load_state_dict(state)
        result["full_allreduce"] = full_allreduce_alignment(trainer.alignment).tolist()
    if ctx.rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    trainer.close()
    destroy_parallel()


if __name__ == "__main__":
    main()
