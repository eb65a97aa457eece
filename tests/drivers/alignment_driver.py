"""Measure DGA alignment scores once and write them as JSON, for every --dga-alignment kind.

    alignment_driver.py OUT.json measure   STEPS [pretrain flags]   the AlignmentMeter (linearity
                                                                    path) and the full all-reduce path
    alignment_driver.py OUT.json reference STEPS [pretrain flags]   brute force in one process: full
                                                                    gradients with torch.autograd, dotted

Both first train STEPS iterations (give --lr 0: the parameters stay where they were, while
Adam's second moments fill up), so that `adam` has a preconditioner to read.
"""

import json
import sys

import numpy as np
import torch

from megatron_dga.arguments import parse_args
from megatron_dga.mixing.alignment import AlignmentMeter, full_allreduce_alignment
from megatron_dga.mixing.preconditioner import AdamPreconditioner
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.training.trainer import Trainer

KINDS = ("raw", "adam", "cosine")


def adam_preconditioner(trainer, params):
    """P = 1 / (sqrt(v_hat) + eps) of every parameter, from a plain torch optimizer's state."""
    optimizer = trainer.engine.engine.optimizer
    optimizer = getattr(optimizer, "optimizer", optimizer)
    blocks = []
    for p in params:
        state = optimizer.state[p]
        group = next(g for g in optimizer.param_groups if any(q is p for q in g["params"]))
        step = float(state["step"])
        v_hat = state["exp_avg_sq"].double() / (1 - group["betas"][1] ** step)
        blocks.append((1.0 / (v_hat.sqrt() + group["eps"])).reshape(-1))
    return torch.cat(blocks)


def brute_force(trainer):
    module, probes = trainer.engine.module, trainer.alignment.probes
    params = [p for p in module.parameters() if p.requires_grad]
    module.eval()

    def gradient(micro_batches):
        loss = sum(module(mb.tokens, mb.labels, mb.loss_mask) for mb in micro_batches) / len(micro_batches)
        return torch.cat([g.reshape(-1).double() for g in torch.autograd.grad(loss, params)])

    precondition = adam_preconditioner(trainer, params)
    probes.begin_update()
    specific = gradient(probes.specific_microbatches())
    result = {kind: [] for kind in KINDS}
    result["stderr_raw"] = []
    for j in range(probes.num_sources):
        micro_batches = probes.source_microbatches(j)
        g = gradient(micro_batches)
        result["raw"].append(float(g @ specific))
        result["adam"].append(float(g @ (precondition * specific)))
        result["cosine"].append(float(g @ specific / (g.norm() * specific.norm())))
        per_micro = [float(gradient([mb]) @ specific) for mb in micro_batches]
        result["stderr_raw"].append(float(np.std(per_micro, ddof=1) / np.sqrt(len(per_micro))))
    return result


def measure(trainer):
    base = trainer.alignment
    state = base.probes.state_dict()
    result = {}
    for kind in KINDS:
        preconditioner = None
        if kind == "adam":
            preconditioner = AdamPreconditioner(trainer.engine.engine, base.layout, trainer.ctx.dp_group,
                                                trainer.layout.dp)
        meter = AlignmentMeter(base.gradients, base.probes, trainer.ctx, kind, preconditioner)
        base.probes.load_state_dict(state)
        measured = meter.measure()
        result[kind] = measured.scores.tolist()
        if kind == "raw":
            result["stderr_raw"] = measured.stderr.tolist()
        base.probes.load_state_dict(state)
        result[f"full_allreduce_{kind}"] = full_allreduce_alignment(meter).tolist()
    return result


def main():
    out, mode, steps, argv = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    config = parse_args(argv)
    ctx = initialize_parallel(config)
    trainer = Trainer(config, ctx)
    for _ in range(steps):
        trainer.train_step()
    result = brute_force(trainer) if mode == "reference" else measure(trainer)
    if ctx.rank == 0:
        with open(out, "w") as f:
            json.dump(result, f)
    trainer.close()
    destroy_parallel()


if __name__ == "__main__":
    main()
