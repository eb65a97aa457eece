"""Measure DGA alignment scores once and write them as JSON, for every --dga-alignment kind.

    alignment_driver.py OUT.json measure   STEPS [pretrain flags]   the AlignmentMeter (linearity
                                                                    path) and the full all-reduce path
    alignment_driver.py OUT.json reference STEPS [pretrain flags]   brute force in one process: full
                                                                    gradients with torch.autograd, dotted

Both first train STEPS iterations (give --lr 0: the parameters stay where they were, while
Adam's second moments fill up), so that `adam` has a preconditioner to read.

The brute-force `adam` score is not the production formula again: it is read off a real
torch.optim.AdamW step. From the optimizer's state, one step with the gradient eps * g_i and one
with a zero gradient are taken on float64 copies of the parameters; their difference, over eps,
is the change that g_i makes to the next Adam step, and its inner product with the specific
gradient, over -(1 - beta1) / (1 - beta1^(t+1)), is the first-order effect on the specific loss
that the adam score claims to be.
"""

import json
import sys

import numpy as np
import torch

from megatron_dga.arguments import parse_args
from megatron_dga.mixing.alignment import AlignmentMeter
from megatron_dga.mixing.preconditioner import AdamPreconditioner
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.parallel.reductions import model_parallel_sum
from megatron_dga.training.trainer import Trainer

KINDS = ("raw", "adam", "cosine")
# The size of the gradient added to the next Adam step. Its own share of Adam's second moment,
# (1 - beta2) (EPS g)^2, must stay negligible beside v on every coordinate: on the embedding rows
# of tokens the two training steps barely saw, v is tiny, and EPS = 1e-7 already moves the score
# by 1e-3. At 1e-10 the difference of the two steps keeps about 8 digits in float64.
EPS = 1e-10


class NextAdamStep:
    """The next step of the run's AdamW (a plain torch optimizer: one process, ZeRO-0), taken
    on float64 copies of the parameters from the optimizer's own state."""

    def __init__(self, trainer, params):
        optimizer = trainer.engine.engine.optimizer
        self.optimizer = getattr(optimizer, "optimizer", optimizer)
        self.params = params
        group = self.optimizer.param_groups[0]
        self.beta1 = group["betas"][0]
        self.step = float(self.optimizer.state[params[0]]["step"])

    def _take(self, grad: torch.Tensor) -> torch.Tensor:
        copies, groups = [], []
        offset = 0
        for p in self.params:
            copy = p.detach().double().clone().requires_grad_(True)
            copy.grad = grad[offset: offset + p.numel()].reshape(p.shape).clone()
            offset += p.numel()
            group = next(g for g in self.optimizer.param_groups if any(q is p for q in g["params"]))
            groups.append({"params": [copy], "betas": group["betas"], "eps": group["eps"],
                           "weight_decay": group["weight_decay"]})
            copies.append(copy)
        adamw = torch.optim.AdamW(groups, lr=1.0, foreach=False)
        for p, copy in zip(self.params, copies):
            state = self.optimizer.state[p]
            adamw.state[copy] = {"step": torch.tensor(float(state["step"]), dtype=torch.float64),
                                 "exp_avg": state["exp_avg"].double().clone(),
                                 "exp_avg_sq": state["exp_avg_sq"].double().clone()}
        adamw.step()
        return torch.cat([c.detach().reshape(-1) for c in copies])

    def change(self, g: torch.Tensor) -> torch.Tensor:
        """What adding g to the next step's gradient changes in that step, to first order."""
        return (self._take(EPS * g) - self._take(torch.zeros_like(g))) / EPS

    def first_order_score(self, g: torch.Tensor, specific: torch.Tensor) -> float:
        """<g_spe, change(g)> / (-(1 - beta1) / (1 - beta1^(t+1)))."""
        factor = (1 - self.beta1) / (1 - self.beta1 ** (self.step + 1))
        return float(specific @ self.change(g)) / -factor


def full_allreduce_alignment(meter: AlignmentMeter) -> np.ndarray:
    """All-reduce every source gradient over data-parallel ranks, then dot: about k times the
    communication of the meter's linearity shortcut, which must give the same scores."""
    probes = meter.probes
    probes.begin_update()
    spe = meter._dp_mean_(meter.gradients.mean(probes.specific_microbatches()))
    spe_norm = meter.norm(spe)
    if meter.kind == "adam":
        meter.preconditioner.apply_(spe)
    owned = torch.cat([torch.full((p.numel(),), float(o), dtype=spe.dtype)
                       for p, o in zip(meter.layout.params, meter.owned)])
    scores = []
    for source in range(probes.num_sources):
        g = meter._dp_mean_(meter.gradients.mean(probes.source_microbatches(source)))
        score = model_parallel_sum(torch.dot(g * owned, spe))
        if meter.kind == "cosine":
            score = score / (meter.norm(g) * spe_norm)
        scores.append(float(score))
    probes.end_update()
    return np.asarray(scores)


def brute_force(trainer):
    module, probes = trainer.engine.module, trainer.alignment.probes
    params = [p for p in module.parameters() if p.requires_grad]
    module.eval()

    def gradient(micro_batches):
        loss = sum(module(mb.tokens, mb.labels, mb.loss_mask) for mb in micro_batches) / len(micro_batches)
        return torch.cat([g.reshape(-1).double() for g in torch.autograd.grad(loss, params)])

    next_step = NextAdamStep(trainer, params)
    probes.begin_update()
    specific = gradient(probes.specific_microbatches())
    result = {kind: [] for kind in KINDS}
    result["stderr_raw"] = []
    for j in range(probes.num_sources):
        micro_batches = probes.source_microbatches(j)
        g = gradient(micro_batches)
        result["raw"].append(float(g @ specific))
        result["adam"].append(next_step.first_order_score(g, specific))
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
