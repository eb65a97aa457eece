"""The training loop.

    build:   data -> model -> DeepSpeed engine -> mixing algorithm -> blend -> batches   (startup.py)
    resume:  model, optimizer, schedule, RNG, data position and mixing state from --load  (run_checkpoints.py)
    loop:    [update the mixture] -> train one global batch -> log / evaluate / save / stop?
             (reporting.py says what is logged, stopping.py when to stop early)
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional

import numpy as np

from megatron_dga.config import PretrainConfig
from megatron_dga.data.batches import TrainBatches
from megatron_dga.data.blend import DynamicBlend
from megatron_dga.mixing.dga import DGAMixing
from megatron_dga.mixing.factory import build_mixing
from megatron_dga.mixing.probe_budget import ProbeCost
from megatron_dga.model.gpt import build_model
from megatron_dga.model.transformer_config import padded_vocab_size
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.layout import probe_batching, probes_may_be_cut
from megatron_dga.training.checkpointing import read_tracker
from megatron_dga.training.evaluation import Evaluator, overall_loss
from megatron_dga.training.hf_checkpoint import load_hf_weights
from megatron_dga.training.housekeeping import Housekeeping
from megatron_dga.training.metrics import MetricsLogger, print_line
from megatron_dga.training.reporting import TrainingReport, domain_series
from megatron_dga.training.run_checkpoints import RunCheckpoints
from megatron_dga.training.startup import (batch_source, build_alignment_meter, build_engine, importance_histogram,
                                           open_training_data)
from megatron_dga.training.stopping import StopRequests, check_finite
from megatron_dga.training.watchdog import Watchdog


class Trainer:
    def __init__(self, config: PretrainConfig, ctx: ParallelContext, watchdog: Optional[Watchdog] = None):
        self.config, self.ctx, self.layout = config, ctx, ctx.layout
        self.watchdog = watchdog or Watchdog(ctx.rank, 60.0 * config.parallel.distributed_timeout_minutes)
        self.data = open_training_data(config.data, config.model, config.training.seed)
        self.domains, self.domain_names, self.tokenizer = self.data.domains, self.data.domain_names, self.data.tokenizer
        self.vocab_size, self.specific_train = self.data.vocab_size, self.data.specific_train
        self.padded_vocab = padded_vocab_size(self.vocab_size, config.model.make_vocab_size_divisible_by,
                                              self.layout.tp)
        model = build_model(config.model, self.padded_vocab, ctx, config.training.bf16, config.training.fp16,
                            config.training.seed)
        self.parameters_on_rank = sum(p.numel() for p in model.parameters())
        ck = config.checkpoint
        if ck.load_hf and not (ck.load and read_tracker(ck.load) is not None):
            self._load_hf(model)  # before DeepSpeed builds its optimizer partitions from the parameters
        self.engine = build_engine(model, config, ctx)

        histogram = None
        if config.mixing.importance_clusters:
            histogram = importance_histogram(self.data, config.mixing.importance_clusters, ctx)
        notes = []
        mbs = self.layout.micro_batch_size
        cuttable = mbs if probes_may_be_cut(config.mixing, self.layout) else None
        microbatches = ProbeCost(self.layout.grad_accumulation_steps,
                                 probe_batching(config.mixing, self.layout).passes(mbs), cuttable,
                                 config.training.train_iters, config.model.seq_length,
                                 self.layout.tp if self.layout.sequence_parallel else 1)
        self.mixing = build_mixing(config.mixing, self.domain_names, [d.train_tokens for d in self.domains],
                                   self.data.data_path_weights, histogram, notes, microbatches,
                                   domain_sequences=[d.train.samples_per_epoch for d in self.domains],
                                   run_sequences=config.training.train_iters * self.layout.global_batch_size)
        if ctx.rank == 0:
            for note in notes:
                print_line(f"note: {note}")
        self.alignment = None
        if isinstance(self.mixing, DGAMixing):
            self.alignment = build_alignment_meter(config.mixing, self.data, self.mixing.bases, self.engine, ctx,
                                                   config.training.eod_mask_loss)

        self.blend = DynamicBlend(len(self.domains), self.mixing.weights())
        eod, mask_eod = self.tokenizer.eod, config.training.eod_mask_loss
        self.batches = TrainBatches([d.train for d in self.domains], self.blend, self.layout, ctx.dp_rank, eod,
                                    mask_eod)
        # DeepSpeed's pipeline feeds inputs to the first stage and labels to the last: the
        # stages between read nothing. With TP, the first rank of each group reads for its peers.
        self.reads_data = self.layout.pp == 1 or ctx.pp_rank in (0, self.layout.pp - 1)
        self.prefetcher = batch_source(self.batches, ctx, config.model.seq_length)
        eval_sets = {d.name: d.valid for d in self.domains if d.valid is not None}
        if self.data.specific_valid is not None:
            eval_sets["specific"] = self.data.specific_valid
        self.evaluator = Evaluator(eval_sets, self.layout, ctx.dp_rank, config.logging.eval_iters, eod, mask_eod,
                                   shared=self.domain_names)
        self.replan_seconds = 0.0

        self.iteration = 0
        self.checkpoints = RunCheckpoints(
            ck, config.model, ctx, self.engine,
            parts={"blend": self.blend, "mixing": self.mixing, "scheduler": self.engine.scheduler,
                   "probes": self.alignment.probes if self.alignment else None},
            described={"padded_vocab_size": self.padded_vocab, "vocab_size": self.vocab_size,
                       "tokenizer": dataclasses.asdict(self.tokenizer), "domains": self.domain_names,
                       "mixing": self.mixing.name, "config": dataclasses.asdict(config)},
            seed=config.training.seed, fp16=config.training.fp16)
        if ck.load:
            with self.watchdog.watch(f"checkpoint load from {ck.load}",
                                     60.0 * config.parallel.checkpoint_load_timeout_minutes):
                self.iteration = self.checkpoints.resume(ck.load) or 0
            if ctx.rank == 0 and getattr(self.mixing, "schedule_change", None):
                print_line(f"note: {self.mixing.schedule_change}")

        log = config.logging
        wandb_settings = {"project": log.wandb_project, "name": log.wandb_exp_name, "save_dir": log.wandb_save_dir,
                          "config": dataclasses.asdict(config)}
        self.logger = MetricsLogger(ctx.is_logging_rank, log.tensorboard_dir, log.metrics_file,
                                    resumed_iteration=self.iteration, resumed_samples=self.consumed_samples,
                                    queue_size=log.tensorboard_queue_size,
                                    wandb_settings=wandb_settings)
        self.report = TrainingReport(self.logger, log, config.model, ctx, self.engine, self.padded_vocab,
                                     config.training.fp16, config.training.train_iters)
        self.housekeeping = Housekeeping(config.training, log, ctx.rank)
        self.stop_requests = StopRequests(config.training, ctx.device)

    def _load_hf(self, model) -> None:
        path = self.config.checkpoint.load_hf
        with self.watchdog.watch(f"loading {path}", 60.0 * self.config.parallel.checkpoint_load_timeout_minutes):
            load_hf_weights(model, path, self.config.model, self.padded_vocab, self.vocab_size, self.layout.tp,
                            self.ctx.tp_rank)
        if self.ctx.rank == 0:
            print_line(f"initialised from {path}")

    @property
    def consumed_samples(self) -> int:
        return self.iteration * self.layout.global_batch_size

    def _domain_draws(self) -> np.ndarray:
        return self.blend.draws_before(self.consumed_samples)

    def _series(self) -> Dict[str, Dict[str, float]]:
        """What is logged per domain: the blend's, and the mixing algorithm's own."""
        series = domain_series(self.domains, self.blend.weights, self._domain_draws(), self.config.model.seq_length)
        series.update(self.mixing.log_values())
        if self.alignment is not None:
            series["mixing-time"] = {"probe-seconds": self.alignment.times.probe_seconds,
                                     "replan-seconds": self.replan_seconds,
                                     "probe-tokens": self.alignment.times.probe_tokens}
        return series

    def save(self) -> None:
        with self.watchdog.watch(f"checkpoint save at iteration {self.iteration}",
                                 60.0 * self.config.parallel.checkpoint_save_timeout_minutes):
            path = self.checkpoints.save(self.iteration, self.consumed_samples)
        self.logger.print(f"saved checkpoint {path}")

    def evaluate(self) -> Dict[str, float]:
        start = time.time()
        with self.housekeeping.around_evaluation():
            losses = self.evaluator.evaluate(self.engine)
        # As Megatron reports it: the loss of the blended validation set, here each domain's
        # validation loss weighted by the blend in effect; the specific set is reported apart.
        overall = overall_loss(losses, self.domain_names, self.blend.weights)
        self.report.validation(self.iteration, self.consumed_samples, losses, overall, time.time() - start)
        return losses

    # ---- one iteration -------------------------------------------------------------------
    def update_mixture(self) -> None:
        """Measure the alignment, step the mixing algorithm, re-plan the blend from here on."""
        with self.watchdog.watch(f"DGA probes before iteration {self.iteration + 1}"):
            draws = self._domain_draws()
            cut = self.mixing.probe_micro_batch_size(self.iteration)
            specific = self.mixing.specific_probe_micro_batch_size(self.iteration)
            tokens = self.mixing.probe_sequence_tokens(self.iteration)
            measured = self.report.measure_dga_update(lambda: self.alignment.measure(draws, cut, specific, tokens))
        lr = self.config.optimizer.lr
        lr_scale = self.engine.learning_rate / lr if lr > 0 else 1.0
        changed = self.mixing.update(self.iteration, measured.scores, measured.stderr, lr_scale,
                                     in_running_scale=measured.in_kind_units)
        start = time.time()
        if changed:
            self.blend.set_weights(self.consumed_samples, self.mixing.weights())
            self.blend.lookup(self.consumed_samples, self.consumed_samples + self.layout.global_batch_size)
        else:
            self.logger.print(f" DGA update at iteration {self.iteration} skipped: alignment {measured.scores} "
                              f"or its step is not finite")
        self.replan_seconds += time.time() - start

    def train_step(self):
        start = time.time()  # the iteration's time includes its mixture update, if any
        # The previous iteration's batch stays planned until now, for the checks after its step.
        self.blend.release_before(self.consumed_samples)
        if self.mixing.wants_update(self.iteration):
            self.update_mixture()
        micro_batches = self.prefetcher.microbatches(self.iteration) if self.reads_data else []
        following = self.iteration + 1
        if self.reads_data and following < self.config.training.train_iters \
                and not self.mixing.wants_update(following):
            self.prefetcher.prefetch(following)  # read while this iteration computes
        result = self.engine.train_step(micro_batches)
        self.iteration += 1
        self.report.add(result, time.time() - start)
        return result

    # ---- the loop ------------------------------------------------------------------------
    def _announce(self) -> None:
        layout = self.layout
        self.logger.print(
            f"training {self.config.training.train_iters} iterations | layout {layout.describe()} | global batch "
            f"{layout.global_batch_size} = micro {layout.micro_batch_size} x DP {layout.dp} x "
            f"accumulation {layout.grad_accumulation_steps} | {len(self.domains)} domains | mixing "
            f"{self.mixing.name} | vocabulary {self.padded_vocab} (padded)"
        )
        if self.config.parallel.sequence_parallel and not layout.sequence_parallel:
            self.logger.print("--sequence-parallel is ignored with --tensor-model-parallel-size 1")
        if self.ctx.rank == 0:  # the first stage's first tensor-parallel shard, as Megatron reports
            print_line(f"number of parameters on (tensor, pipeline) model parallel rank (0, 0): "
                       f"{self.parameters_on_rank}")

    def train(self) -> None:
        cfg = self.config
        log_interval, train_iters = cfg.logging.log_interval, cfg.training.train_iters
        self._announce()
        self.stop_requests.install()
        self.report.start()
        last_eval = last_save = self.iteration
        stop = None
        while self.iteration < train_iters:
            self.watchdog.now(f"iteration {self.iteration + 1}")
            self.housekeeping.before_step(self.iteration + 1)
            result = self.train_step()
            if cfg.training.check_for_nan_in_loss_and_grad:
                check_finite(result, self.iteration, lambda: self.batches.global_domains(self.iteration - 1),
                             self.domain_names, cfg.checkpoint.save)
            last = self.iteration == train_iters
            console = self.iteration % log_interval == 0 or last
            scalars = self.iteration % (cfg.logging.tensorboard_log_interval or log_interval) == 0 or last
            if console or scalars:
                self.report.iteration(self.iteration, self.consumed_samples, result, self._series(), console, scalars)
            self.housekeeping.after_step(self.iteration)
            if self.iteration % cfg.logging.eval_interval == 0 and self.evaluator.names:
                with self.watchdog.watch(f"evaluation at iteration {self.iteration}"):
                    self.evaluate()
                last_eval = self.iteration
            if cfg.checkpoint.save_interval and self.iteration % cfg.checkpoint.save_interval == 0:
                self.save()
                last_save = self.iteration
            if cfg.training.exit_interval and self.iteration % cfg.training.exit_interval == 0:
                break
            stop = self.stop_requests.requested() if self.iteration % log_interval == 0 else None
            if stop:
                self.logger.print(f" stopping at iteration {self.iteration}: {stop}")
                break
        if self.evaluator.names and last_eval != self.iteration and not stop:
            with self.watchdog.watch(f"evaluation at iteration {self.iteration}"):
                self.evaluate()
        if cfg.checkpoint.save and last_save != self.iteration:
            self.save()
        elif stop and not cfg.checkpoint.save:
            self.logger.print(" no --save: nothing to resume from")
        self.logger.flush()

    def close(self) -> None:
        self.housekeeping.close()
        self.prefetcher.close()
        self.watchdog.stop()
        self.logger.close()
