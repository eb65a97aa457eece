"""What the training loop reports, and where.

    every iteration:      its loss and time are kept (device tensors stay on the device)
    a logged iteration:   Megatron's console line, a metrics.jsonl record, TensorBoard/W&B scalars
                          with Megatron's names, per-domain series (mixture, epochs, tokens, DGA's)
    a validation:         Megatron's validation lines, the scalars and a record
    memory:               the run's peak, and what a DGA update adds above the memory between steps
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from megatron_dga.config import LoggingConfig, ModelConfig
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.training import memory
from megatron_dga.training.engine import TrainingEngine, value
from megatron_dga.training.iteration_log import (iteration_line, model_flops_per_iteration, optimizer_state_norms,
                                                 params_norm, validation_lines)
from megatron_dga.training.metrics import MetricsLogger


def domain_series(domains, weights: np.ndarray, draws: np.ndarray, seq_length: int) -> Dict[str, Dict[str, float]]:
    """Per-domain values to log: the weights in use, epochs and tokens drawn so far."""
    names = [d.name for d in domains]
    return {
        "data-mixture": dict(zip(names, map(float, weights))),
        "domain-epochs": {d.name: d.train.epochs(int(n)) for d, n in zip(domains, draws)},
        "domain-tokens": {n: float(k * seq_length) for n, k in zip(names, draws)},
    }


class TrainingReport:
    def __init__(self, logger: MetricsLogger, log: LoggingConfig, model: ModelConfig, ctx: ParallelContext,
                 engine: TrainingEngine, padded_vocab: int, fp16: bool, train_iters: int):
        self.logger, self.log, self.model, self.ctx, self.engine = logger, log, model, ctx, engine
        self.layout = ctx.layout
        self.padded_vocab, self.fp16, self.train_iters = padded_vocab, fp16, train_iters
        self.peaks = memory.Peaks()
        self.memory_at_start = memory.current_bytes()
        self.dga_update_bytes: Optional[int] = None  # the last DGA update's peak above its start
        self._losses: List = []
        self._times: List[float] = []

    def start(self) -> None:
        self.memory_at_start = memory.current_bytes()

    def measure_dga_update(self, update: Callable):
        """Run a DGA update, keeping what it adds to the memory held between steps."""
        result, self.dga_update_bytes = self.peaks.measure(update)
        return result

    def add(self, result, seconds: float) -> None:
        """One iteration's loss (not read yet) and time (its mixture update included)."""
        self._times.append(seconds)
        self._losses.append(result.loss)

    # ---- a logged iteration --------------------------------------------------------------
    def iteration(self, iteration: int, consumed: int, result, series: Dict[str, Dict[str, float]],
                  to_console: bool = True, to_scalars: bool = True) -> None:
        engine = self.engine.engine
        iteration_time = float(np.mean(self._times))
        # The one read of the iterations' losses (device tensors on GPUs) since the last log line.
        loss = float(torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in self._losses]).mean())
        grad_norm = value(result.grad_norm)
        tokens_per_second = self.layout.global_batch_size * self.model.seq_length / iteration_time
        throughput = None
        if self.log.log_throughput:
            flops = model_flops_per_iteration(self.model, self.padded_vocab, self.layout.global_batch_size)
            throughput = flops / (iteration_time * self.layout.world_size) / 1e12
        norm_of_params = params_norm(self.engine.module) if self.log.log_params_norm else None
        loss_scale = float(getattr(engine.optimizer, "cur_scale", 1.0)) if self.fp16 else 1.0
        figures = {"lm loss": loss, "grad-norm": grad_norm, "iteration-time": iteration_time,
                   "tokens-per-second": tokens_per_second, "throughput": throughput, "params-norm": norm_of_params,
                   "loss-scale": loss_scale}
        if to_scalars:
            self.logger.scalars(iteration, self._train_scalars(consumed, figures, series), samples=consumed)
        if not to_console:
            return
        self.logger.record({
            "type": "train", "iteration": iteration, "consumed_samples": consumed,
            "lm_loss": loss, "learning_rate": self.engine.learning_rate, "grad_norm": grad_norm,
            "iteration_time": iteration_time, "tokens_per_second": tokens_per_second,
            "throughput": throughput, "params_norm": norm_of_params, "loss_scale": loss_scale,
            "skipped": result.skipped, "skipped_iterations": engine.skipped_steps,
            "memory_peak_mb": self.peaks.run_peak() / 2 ** 20,
            "memory_dga_update_mb": None if self.dga_update_bytes is None else self.dga_update_bytes / 2 ** 20,
            "memory_at_start_mb": self.memory_at_start / 2 ** 20,
            **{k.replace("-", "_"): v for k, v in series.items()},
        })
        top = sorted(series["data-mixture"].items(), key=lambda kv: -kv[1])[:3]
        mixture = ", ".join(f"{n} {w:.2f}" for n, w in top)
        self.logger.print(iteration_line(
            iteration, self.train_iters, consumed, iteration_time, self.engine.learning_rate,
            self.layout.global_batch_size, loss, loss_scale, grad_norm, engine.skipped_steps, 0, throughput,
            norm_of_params, {"tokens/s": f"{tokens_per_second:.0f}", "mixture": mixture}))
        self._losses.clear()
        self._times.clear()

    def _train_scalars(self, consumed: int, figures: Dict, series: Dict[str, Dict[str, float]]) -> Dict[str, float]:
        """The TensorBoard scalars of a logged iteration, with Megatron's names (and their
        'vs samples' twins, stepped by consumed samples: MetricsLogger.scalars)."""
        log = self.log
        scalars = {"lm loss": figures["lm loss"], "learning-rate": self.engine.learning_rate,
                   "grad-norm": figures["grad-norm"], "tokens-per-second": figures["tokens-per-second"],
                   "consumed-samples": consumed,
                   # fp16 steps DeepSpeed skipped for an overflow, since the start of the run
                   "skipped-iterations": self.engine.engine.skipped_steps,
                   "memory/peak-mb": self.peaks.run_peak() / 2 ** 20}
        if log.log_timers_to_tensorboard:
            scalars["iteration-time"] = figures["iteration-time"]
        if log.log_batch_size_to_tensorboard:
            scalars["batch-size"] = self.layout.global_batch_size
        if log.log_loss_scale_to_tensorboard:
            scalars["loss-scale"] = figures["loss-scale"]
        for name in ("throughput", "params-norm"):
            if figures[name] is not None:
                scalars[name] = figures[name]
        if log.log_world_size_to_tensorboard:
            scalars["world-size"] = self.layout.world_size
        if log.log_memory_to_tensorboard:
            scalars["mem-allocated-bytes"] = float(memory.current_bytes())
            scalars["mem-max-allocated-bytes"] = float(self.peaks.run_peak())
        if log.log_optimizer_states_to_tensorboard:
            scalars.update(optimizer_state_norms(self.engine.engine, self.ctx))
        if self.dga_update_bytes is not None:
            scalars["memory/dga-update-mb"] = self.dga_update_bytes / 2 ** 20
        for group, values in series.items():
            if group == "mixing-time" and not log.log_timers_to_tensorboard:
                continue
            scalars.update({f"{group}/{name}": v for name, v in values.items()})
        return scalars

    # ---- a validation --------------------------------------------------------------------
    def validation(self, iteration: int, consumed: int, losses: Dict[str, float], overall: Optional[float],
                   seconds: float) -> None:
        """`overall` is Megatron's `lm loss validation` (the blend's); each set's loss apart."""
        scalars = {f"lm loss validation/{name}": loss for name, loss in losses.items()}
        scalars["lm loss validation"] = overall
        if self.log.log_validation_ppl_to_tensorboard and overall is not None:
            scalars["lm loss validation ppl"] = math.exp(min(20.0, overall))
        self.logger.scalars(iteration, scalars, samples=consumed)
        self.logger.record({"type": "validation", "iteration": iteration, "consumed_samples": consumed,
                            "lm_loss_validation": overall, "per_set": losses, "eval_time": seconds})
        for line in validation_lines(iteration, overall, losses):
            self.logger.print(line)
