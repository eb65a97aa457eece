"""The training loop.

    build:   domains -> model -> DeepSpeed engine -> mixing algorithm -> blend -> batches
    resume:  model, optimizer, schedule, RNG, data position and mixing state from --load
    loop:    [update the mixture] -> train one global batch -> log / evaluate / save
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state

import megatron_dga
from megatron_dga.config import PretrainConfig
from megatron_dga.data.batches import PrefetchedBatches, TensorParallelSharedBatches, TrainBatches
from megatron_dga.data.blend import DynamicBlend
from megatron_dga.data.domains import Domain, open_domains, open_specific_sets
from megatron_dga.data.sequences import FewExamples
from megatron_dga.mixing.alignment import AlignmentMeter
from megatron_dga.mixing.dga import DGAMixing
from megatron_dga.mixing.factory import build_mixing
from megatron_dga.mixing.gradients import SequentialProbeGradients
from megatron_dga.mixing.pipeline_probes import PipelineProbeGradients
from megatron_dga.mixing.importance import assign_to_clusters
from megatron_dga.mixing.preconditioner import AdamPreconditioner
from megatron_dga.mixing.probes import ProbeData
from megatron_dga.model.gpt import build_model
from megatron_dga.model.transformer_config import layer_implementation, padded_vocab_size
from megatron_dga.parallel.initialize import ParallelContext, seed_everything
from megatron_dga.parallel.layout import LayoutError, probe_microbatches_per_rank
from megatron_dga.training import memory
from megatron_dga.training.checkpointing import (Checkpointer, CheckpointError, check_same_layers, checkpoint_name,
                                                 describe_layout, layout_dict, model_shape_mismatch, read_tracker,
                                                 rng_device)
from megatron_dga.training.deepspeed_config import load_user_config
from megatron_dga.training.engine import TrainingEngine, value
from megatron_dga.training.evaluation import Evaluator, overall_loss
from megatron_dga.training.export import sharding_map
from megatron_dga.training.hf_checkpoint import load_hf_weights
from megatron_dga.training.housekeeping import Housekeeping
from megatron_dga.training.iteration_log import (iteration_line, model_flops_per_iteration, optimizer_state_norms,
                                                 params_norm, validation_lines)
from megatron_dga.training.metrics import MetricsLogger
from megatron_dga.training.reshard import load_into_engine, optimizer_parameter_names, read_training_state
from megatron_dga.training.watchdog import Watchdog


class TrainingDivergedError(RuntimeError):
    """A loss or gradient norm that is not finite."""


def model_vocab_size(config: PretrainConfig, tokenizer_vocab: Optional[int], tokenizer_type: Optional[str] = None
                     ) -> int:
    """The unpadded model vocabulary: --vocab-size, else the tokenizer's. NullTokenizer's
    --vocab-size counts its ids without the end of document, which is one more (Megatron's)."""
    requested = config.model.vocab_size
    if tokenizer_type == "NullTokenizer":
        return tokenizer_vocab
    if requested is None and tokenizer_vocab is None:
        raise LayoutError("the vocabulary size is unknown: give --vocab-size or --tokenizer-type")
    if requested is not None and tokenizer_vocab is not None and tokenizer_vocab > requested:
        raise LayoutError(
            f"the tokenizer's vocabulary ({tokenizer_vocab} tokens) is larger than the model's "
            f"--vocab-size {requested}"
        )
    return requested if requested is not None else tokenizer_vocab


class Trainer:
    def __init__(self, config: PretrainConfig, ctx: ParallelContext, watchdog: Optional[Watchdog] = None):
        self.config, self.ctx, self.layout = config, ctx, ctx.layout
        self.watchdog = watchdog or Watchdog(ctx.rank, 60.0 * config.parallel.distributed_timeout_minutes)
        seq_length = config.model.seq_length
        self.domains: List[Domain]
        self.domains, data_path_weights, self.tokenizer = open_domains(config.data, seq_length, config.training.seed,
                                                                       config.model.vocab_size)
        self.domain_names = [d.name for d in self.domains]
        vocab = model_vocab_size(config, self.tokenizer.vocab_size, self.tokenizer.type)
        self.padded_vocab = padded_vocab_size(vocab, config.model.make_vocab_size_divisible_by, self.layout.tp)

        model = build_model(config.model, self.padded_vocab, ctx, config.training.bf16, config.training.fp16,
                            config.training.seed)
        self.parameters_on_rank = sum(p.numel() for p in model.parameters())
        if config.checkpoint.load_hf and not self._has_checkpoint(config.checkpoint.load):
            # Before DeepSpeed builds its optimizer partitions from the parameters.
            with self.watchdog.watch(f"loading {config.checkpoint.load_hf}",
                                     60.0 * config.parallel.checkpoint_load_timeout_minutes):
                load_hf_weights(model, config.checkpoint.load_hf, config.model, self.padded_vocab, vocab,
                                self.layout.tp, ctx.tp_rank)
            if ctx.rank == 0:
                print(f"initialised from {config.checkpoint.load_hf}", flush=True)
        self.engine = TrainingEngine(model, config, ctx, load_user_config(config.training.deepspeed_config))
        self.specific_train, specific_valid = open_specific_sets(config.data, seq_length, config.training.seed)
        self.vocab_size = vocab
        specific_streams = [getattr(self.specific_train, "stream", self.specific_train), specific_valid]
        for stream in [s for d in self.domains for s in (d.train, d.valid)] + specific_streams:
            if stream is not None:
                stream.vocab_size = vocab  # a token id beyond it is a data error, not an index error
        importance_histogram = None
        if config.mixing.importance_clusters:
            importance_histogram = self._startup_importance_histogram()
        mixing_notes: List[str] = []
        self.mixing = build_mixing(config.mixing, self.domain_names, [d.train_tokens for d in self.domains],
                                   data_path_weights, importance_histogram, mixing_notes)
        if ctx.rank == 0:
            for note in mixing_notes:
                print(f"note: {note}", flush=True)
        self.blend = DynamicBlend(len(self.domains), self.mixing.weights())
        eod, mask_eod = self.tokenizer.eod, config.training.eod_mask_loss
        self.batches = TrainBatches([d.train for d in self.domains], self.blend, self.layout, ctx.dp_rank, eod,
                                    mask_eod)
        # DeepSpeed's pipeline feeds inputs to the first stage and labels to the last: the
        # stages between read nothing. With TP, the first rank of each group reads for its peers.
        self.reads_data = self.layout.pp == 1 or ctx.pp_rank in (0, self.layout.pp - 1)
        self.prefetcher = self._batch_source()
        eval_sets = {d.name: d.valid for d in self.domains if d.valid is not None}
        if specific_valid is not None:
            eval_sets["specific"] = specific_valid
        self.evaluator = Evaluator(eval_sets, self.layout, ctx.dp_rank, config.logging.eval_iters, eod, mask_eod,
                                   shared=self.domain_names)
        self.alignment = self._build_alignment_meter() if isinstance(self.mixing, DGAMixing) else None
        self.replan_seconds = 0.0
        self.peaks = memory.Peaks()
        self.dga_update_bytes: Optional[int] = None  # the last DGA update's peak above its start
        self.checkpointer = Checkpointer(ctx, self.engine.engine)
        self.iteration = 0
        if config.checkpoint.load:
            with self.watchdog.watch(f"checkpoint load from {config.checkpoint.load}",
                                     60.0 * config.parallel.checkpoint_load_timeout_minutes):
                self._resume(config.checkpoint.load)
        log = config.logging
        wandb_settings = {"project": log.wandb_project, "name": log.wandb_exp_name, "save_dir": log.wandb_save_dir,
                          "config": dataclasses.asdict(config)}
        self.logger = MetricsLogger(ctx.is_logging_rank, log.tensorboard_dir, log.metrics_file,
                                    resumed_iteration=self.iteration, queue_size=log.tensorboard_queue_size,
                                    wandb_settings=wandb_settings)
        self.housekeeping = Housekeeping(config.training, log, ctx.rank)
        self._interval_losses: List[float] = []
        self._interval_times: List[float] = []

    def _batch_source(self):
        """This rank's training batches: its own reads, or with TP the first rank's, shared."""
        reads = self.ctx.tp_rank == 0
        reader = PrefetchedBatches(self.batches, pin_memory=torch.cuda.is_available()) if reads else None
        if self.layout.tp == 1:
            return reader
        return TensorParallelSharedBatches(reader, self.layout,
                                           self.config.model.seq_length, self.ctx.device, self.ctx.tp_group,
                                           parallel_state.get_tensor_model_parallel_src_rank())

    @staticmethod
    def _has_checkpoint(directory: Optional[str]) -> bool:
        return bool(directory) and read_tracker(directory) is not None

    def _startup_importance_histogram(self) -> np.ndarray:
        """Rank 0 assigns what training knows of the specific set (its documents, or only the
        --specific-train-samples sequences), turned back into text, to the clusters of
        --importance-clusters; every rank receives the weights."""
        result = [None]
        if self.ctx.rank == 0:
            tokenizer = self.tokenizer.build()
            if isinstance(self.specific_train, FewExamples):
                token_lists = [seq.tolist() for seq in self.specific_train.examples()]
            else:
                dataset = self.specific_train.dataset
                token_lists = [dataset.get(i).tolist() for i in range(len(dataset))]
            texts = [tokenizer.detokenize(tokens) for tokens in token_lists]
            result[0] = assign_to_clusters(self.config.mixing.importance_clusters, texts, self.domain_names)
        dist.broadcast_object_list(result, src=0)
        return result[0]

    def _build_alignment_meter(self) -> AlignmentMeter:
        cfg = self.config
        # Probes read ahead in the domains' own training streams (mixing/probes.py).
        probes = ProbeData([d.train for d in self.domains], self.specific_train, self.mixing.bases, self.layout,
                           self.ctx.dp_rank, probe_microbatches_per_rank(cfg, self.layout), self.tokenizer.eod,
                           cfg.training.eod_mask_loss)
        if self.engine.pipelined:
            gradients = PipelineProbeGradients(self.engine.engine, self.ctx.device)
        else:
            gradients = SequentialProbeGradients(self.engine.module, self.ctx.device, self.engine.engine)
        kind = cfg.mixing.dga_alignment
        preconditioner = None
        if kind == "adam":
            preconditioner = AdamPreconditioner(self.engine.engine, gradients.layout, self.ctx.dp_group,
                                                self.layout.dp)
        return AlignmentMeter(gradients, probes, self.ctx, kind, preconditioner)

    # ---- bookkeeping ---------------------------------------------------------------------
    @property
    def consumed_samples(self) -> int:
        return self.iteration * self.layout.global_batch_size

    def _domain_draws(self) -> np.ndarray:
        return self.blend.draws_before(self.consumed_samples)

    def _domain_series(self) -> Dict[str, Dict[str, float]]:
        """Per-domain values to log: weights in use, epochs and tokens drawn so far."""
        draws = self._domain_draws()
        weights = self.blend.weights
        return {
            "data-mixture": dict(zip(self.domain_names, map(float, weights))),
            "domain-epochs": {d.name: d.train.epochs(int(n)) for d, n in zip(self.domains, draws)},
            "domain-tokens": {n: float(k * self.config.model.seq_length) for n, k in zip(self.domain_names, draws)},
            **self.mixing.log_values(),
            **self._mixing_times(),
        }

    def _mixing_times(self) -> Dict[str, Dict[str, float]]:
        if self.alignment is None:
            return {}
        return {"mixing-time": {"probe-seconds": self.alignment.times.probe_seconds,
                                "replan-seconds": self.replan_seconds}}

    # ---- checkpoints ---------------------------------------------------------------------
    def _client_state(self) -> Dict:
        return {
            "iteration": self.iteration,
            "consumed_samples": self.consumed_samples,
            "blend": self.blend.state_dict(),
            "mixing": self.mixing.state_dict(),
            "scheduler": self.engine.scheduler.state_dict() if self.engine.scheduler else None,
            "probes": self.alignment.probes.state_dict() if self.alignment else None,
            "domains": self.domain_names,
            "config": dataclasses.asdict(self.config),
            # What --reshard needs to read this rank's files under another layout.
            "parallel_ranks": {"tp": self.ctx.tp_rank, "pp": self.ctx.pp_rank, "dp": self.ctx.dp_rank},
            "parameter_shapes": {n: list(p.shape) for n, p in self.engine.module.named_parameters()},
            "optimizer_parameters": optimizer_parameter_names(self.engine.engine),
        }

    def _sharding(self) -> Dict[str, List[int]]:
        """How every tensor-parallel parameter of the whole model is split (gathered from all
        pipeline stages), so a checkpoint can be merged into one state dict later."""
        maps: List[Optional[Dict]] = [None] * self.layout.world_size
        dist.all_gather_object(maps, sharding_map(self.engine.module))
        return {name: split for m in maps for name, split in m.items()}

    def save(self) -> None:
        with self.watchdog.watch(f"checkpoint save at iteration {self.iteration}",
                                 60.0 * self.config.parallel.checkpoint_save_timeout_minutes):
            self._save()

    def _save(self) -> None:
        metadata = {
            "sharding": self._sharding(),
            "padded_vocab_size": self.padded_vocab,
            "vocab_size": self.vocab_size,
            "tokenizer": dataclasses.asdict(self.tokenizer),
            "model": dataclasses.asdict(self.config.model),
            "iteration": self.iteration,
            "consumed_samples": self.consumed_samples,
            "layout": layout_dict(self.layout),
            "zero_stage": self.engine.engine.zero_optimization_stage(),
            "domains": self.domain_names,
            "mixing": self.mixing.name,
            "transformer_impl": layer_implementation(self.config.model),
            "rng_device": rng_device(),
            "version": megatron_dga.__version__,
        }
        path = self.checkpointer.save(self.config.checkpoint.save, self.iteration, self._client_state(), metadata)
        self.logger.print(f"saved checkpoint {path}")

    def _resume(self, directory: str) -> None:
        ck = self.config.checkpoint
        metadata = self.checkpointer.read_metadata(directory)
        if metadata is None:
            if self.ctx.rank == 0:
                print(f"no checkpoint in {directory} ({directory}/latest_checkpointed_iteration.txt "
                      f"is missing): training from scratch", flush=True)
            return
        if metadata["domains"] != self.domain_names:
            raise LayoutError(f"checkpoint domains {metadata['domains']} differ from this run's {self.domain_names}")
        check_same_layers(metadata, layer_implementation(self.config.model), directory)
        mismatch = model_shape_mismatch(metadata.get("model", {}), dataclasses.asdict(self.config.model), directory)
        if mismatch is not None:
            raise CheckpointError(mismatch)
        mismatch = self.checkpointer.layout_mismatch(metadata, self.layout, not ck.no_load_optim)
        if mismatch is not None and not ck.reshard:
            raise CheckpointError(mismatch)
        resharding = mismatch is not None
        if resharding:
            state = self._reshard(directory, metadata)
        else:
            state = self.checkpointer.load(directory, load_optimizer=not ck.no_load_optim,
                                           load_rng=not ck.no_load_rng)
        self.iteration = int(state["iteration"])
        if not ck.no_load_rng and (resharding or not self.checkpointer.rng_restored):
            # Another layout (per-rank RNG states cannot follow the ranks), or another kind of
            # device (CPU and CUDA generator states do not convert).
            seed_everything(self.config.training.seed + self.iteration + 100 * self.ctx.pp_rank, self.ctx.tp_rank)
            if self.ctx.rank == 0:
                print(f"checkpoint RNG states are for {metadata['layout']} on {metadata.get('rng_device', 'cpu')}, not this "
                      f"run's layout or device: generators seeded from --seed and the iteration", flush=True)
        self.blend.load_state_dict(state["blend"])
        self.mixing.load_state_dict(state["mixing"])
        if self.alignment is not None:
            self.alignment.probes.load_state_dict(state["probes"])
        if self.engine.scheduler is not None and state["scheduler"] is not None:
            self.engine.scheduler.load_state_dict(state["scheduler"])
        if self.ctx.rank == 0:
            print(f"resumed from {directory} at iteration {self.iteration}", flush=True)

    def _reshard(self, directory: str, metadata: Dict) -> Dict:
        """Load a checkpoint of another layout through its layout-free state (training/reshard.py)."""
        if self.config.training.fp16:
            raise CheckpointError("--reshard does not convert into an fp16 run (its loss scale has no "
                                  "counterpart in the checkpoint); use --bf16 or fp32")
        path = os.path.join(directory, checkpoint_name(metadata["iteration"]))
        with_optimizer = not self.config.checkpoint.no_load_optim
        state = read_training_state(path, with_optimizer)
        load_into_engine(self.engine.engine, state, self.layout.tp, self.ctx.tp_rank, self.padded_vocab,
                         with_optimizer)
        self.engine.engine.global_steps = int(state.client_state["iteration"])
        self.engine.engine.global_samples = int(state.client_state["consumed_samples"])
        if self.ctx.rank == 0:
            print(f"resharded from {describe_layout(metadata['layout'])} to "
                  f"{describe_layout(layout_dict(self.layout))}{'' if with_optimizer else ' (model only)'}", flush=True)
        return state.client_state

    # ---- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> Dict[str, float]:
        start = time.time()
        with self.housekeeping.around_evaluation():
            losses = self.evaluator.evaluate(self.engine)
        # As Megatron reports it: the loss of the blended validation set, here each domain's
        # validation loss weighted by the blend in effect; the specific set is reported apart.
        overall = overall_loss(losses, self.domain_names, self.blend.weights)
        scalars = {f"lm loss validation/{name}": loss for name, loss in losses.items()}
        scalars["lm loss validation"] = overall
        if self.config.logging.log_validation_ppl_to_tensorboard and overall is not None:
            scalars["lm loss validation ppl"] = math.exp(min(20.0, overall))
        self.logger.scalars(self.iteration, scalars, samples=self.consumed_samples)
        self.logger.record({"type": "validation", "iteration": self.iteration,
                            "consumed_samples": self.consumed_samples, "lm_loss_validation": overall,
                            "per_set": losses, "eval_time": time.time() - start})
        for line in validation_lines(self.iteration, overall, losses):
            self.logger.print(line)
        return losses

    # ---- training ------------------------------------------------------------------------
    def _log(self, result, to_console: bool = True, to_scalars: bool = True) -> None:
        cfg, log = self.config, self.config.logging
        iteration_time = float(np.mean(self._interval_times))
        # The one read of the iterations' losses (device tensors on GPUs) since the last log line.
        loss = float(torch.stack([torch.as_tensor(x, dtype=torch.float32) for x in self._interval_losses]).mean())
        grad_norm = value(result.grad_norm)
        tokens_per_second = self.layout.global_batch_size * cfg.model.seq_length / iteration_time
        throughput = None
        if log.log_throughput:
            flops = model_flops_per_iteration(cfg.model, self.padded_vocab, self.layout.global_batch_size)
            throughput = flops / (iteration_time * self.layout.world_size) / 1e12
        norm_of_params = params_norm(self.engine.module) if log.log_params_norm else None
        loss_scale = float(getattr(self.engine.engine.optimizer, "cur_scale", 1.0)) if cfg.training.fp16 else 1.0
        series = self._domain_series()
        if to_scalars:
            self.logger.scalars(self.iteration, self._train_scalars(
                loss, grad_norm, iteration_time, tokens_per_second, throughput, norm_of_params, loss_scale, series),
                samples=self.consumed_samples)
        if not to_console:
            return
        self.logger.record({
            "type": "train", "iteration": self.iteration, "consumed_samples": self.consumed_samples,
            "lm_loss": loss, "learning_rate": self.engine.learning_rate, "grad_norm": grad_norm,
            "iteration_time": iteration_time, "tokens_per_second": tokens_per_second,
            "throughput": throughput, "params_norm": norm_of_params, "loss_scale": loss_scale,
            "skipped": result.skipped, "skipped_iterations": self.engine.engine.skipped_steps,
            "memory_peak_mb": self.peaks.run_peak() / 2 ** 20,
            "memory_dga_update_mb": None if self.dga_update_bytes is None else self.dga_update_bytes / 2 ** 20,
            "memory_at_start_mb": self._memory_at_start / 2 ** 20,
            **{k.replace("-", "_"): v for k, v in series.items()},
        })
        mixture = ", ".join(f"{n} {w:.2f}" for n, w in sorted(series["data-mixture"].items(), key=lambda kv: -kv[1])[:3])
        self.logger.print(iteration_line(
            self.iteration, cfg.training.train_iters, self.consumed_samples, iteration_time,
            self.engine.learning_rate, self.layout.global_batch_size, loss, loss_scale, grad_norm,
            self.engine.engine.skipped_steps, 0, throughput, norm_of_params,
            {"tokens/s": f"{tokens_per_second:.0f}", "mixture": mixture}))
        self._interval_losses.clear()
        self._interval_times.clear()

    def _train_scalars(self, loss, grad_norm, iteration_time, tokens_per_second, throughput, norm_of_params,
                       loss_scale, series) -> Dict[str, float]:
        """The TensorBoard scalars of a logged iteration, with Megatron's names (and their
        'vs samples' twins, stepped by consumed samples: MetricsLogger.scalars)."""
        log = self.config.logging
        scalars = {"lm loss": loss, "learning-rate": self.engine.learning_rate, "grad-norm": grad_norm,
                   "tokens-per-second": tokens_per_second, "consumed-samples": self.consumed_samples,
                   # fp16 steps DeepSpeed skipped for an overflow, since the start of the run
                   "skipped-iterations": self.engine.engine.skipped_steps,
                   "memory/peak-mb": self.peaks.run_peak() / 2 ** 20}
        if log.log_timers_to_tensorboard:
            scalars["iteration-time"] = iteration_time
        if log.log_batch_size_to_tensorboard:
            scalars["batch-size"] = self.layout.global_batch_size
        if log.log_loss_scale_to_tensorboard:
            scalars["loss-scale"] = loss_scale
        if throughput is not None:
            scalars["throughput"] = throughput
        if norm_of_params is not None:
            scalars["params-norm"] = norm_of_params
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

    def update_mixture(self) -> None:
        """Measure the alignment, step the mixing algorithm, re-plan the blend from here on."""
        with self.watchdog.watch(f"DGA probes before iteration {self.iteration + 1}"):
            # What an update adds to the memory held between steps (its peak above it).
            draws = self._domain_draws()
            measured, self.dga_update_bytes = self.peaks.measure(lambda: self.alignment.measure(draws))
        lr_scale = self.engine.learning_rate / self.config.optimizer.lr if self.config.optimizer.lr > 0 else 1.0
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
        self._interval_times.append(time.time() - start)
        self._interval_losses.append(result.loss)
        return result

    # ---- stopping ------------------------------------------------------------------------
    def _check_finite(self, result) -> None:
        """--check-for-nan-in-loss-and-grad: stop at a loss or gradient norm that is not finite
        (a skipped fp16 overflow step is DeepSpeed's business, not divergence)."""
        bad = []
        # One host read per iteration, this check's price: the loss and the norm travel together.
        pair = [result.loss, result.grad_norm if result.grad_norm is not None else float("nan")]
        device = result.loss.device if torch.is_tensor(result.loss) else None
        loss, grad_norm = torch.stack([torch.as_tensor(x, dtype=torch.float32, device=device) for x in pair]).tolist()
        grad_norm = None if result.grad_norm is None else grad_norm
        if not math.isfinite(loss):
            bad.append(f"the loss is {loss}")
        if grad_norm is not None and not math.isfinite(grad_norm) and not result.skipped:
            bad.append(f"the gradient norm is {grad_norm}")
        if not bad:
            return
        domains = self.batches.global_domains(self.iteration - 1)
        counts = np.bincount(domains, minlength=len(self.domain_names))
        drawn = ", ".join(f"{self.domain_names[d]} x{counts[d]}" for d in np.flatnonzero(counts))
        last = read_tracker(self.config.checkpoint.save) if self.config.checkpoint.save else None
        raise TrainingDivergedError(
            f"iteration {self.iteration}: {' and '.join(bad)}; its global batch drew from {drawn}. "
            f"Nothing was saved; the last checkpoint is "
            f"{'iteration ' + str(last) if last is not None else 'none'}."
        )

    def _stop_requested(self, started: float) -> Optional[str]:
        """Whether any rank got SIGTERM (--exit-signal-handler) or the run reached
        --exit-duration-in-mins; every rank gets the same answer. Asked at log intervals only
        (where the host reads the iteration's results anyway): the all-reduce and its read
        would otherwise hold every iteration on the host."""
        cfg = self.config.training
        if not (cfg.exit_signal_handler or cfg.exit_duration_in_mins):
            return None
        flags = torch.tensor([float(self._signal_received),
                              float(bool(cfg.exit_duration_in_mins)
                                    and time.time() - started > 60.0 * cfg.exit_duration_in_mins)],
                             device=self.ctx.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        if flags[0] > 0:
            return "SIGTERM received (--exit-signal-handler)"
        if flags[1] > 0:
            return f"--exit-duration-in-mins {cfg.exit_duration_in_mins} reached"
        return None

    def _install_signal_handler(self) -> None:
        self._signal_received = False
        if self.config.training.exit_signal_handler:
            def received(signum, frame):
                self._signal_received = True
            signal.signal(signal.SIGTERM, received)

    def train(self) -> None:
        cfg = self.config
        self.logger.print(
            f"training {cfg.training.train_iters} iterations | layout {self.layout.describe()} | global batch "
            f"{self.layout.global_batch_size} = micro {self.layout.micro_batch_size} x DP {self.layout.dp} x "
            f"accumulation {self.layout.grad_accumulation_steps} | {len(self.domains)} domains | mixing "
            f"{self.mixing.name} | vocabulary {self.padded_vocab} (padded)"
        )
        if cfg.parallel.sequence_parallel and not self.layout.sequence_parallel:
            self.logger.print("--sequence-parallel is ignored with --tensor-model-parallel-size 1")
        if self.ctx.rank == 0:  # the first stage's first tensor-parallel shard, as Megatron reports
            print(f"number of parameters on (tensor, pipeline) model parallel rank (0, 0): {self.parameters_on_rank}",
                  flush=True)
        self._install_signal_handler()
        self._memory_at_start = memory.current_bytes()
        started = time.time()
        last_eval = last_save = self.iteration
        stop = None
        while self.iteration < cfg.training.train_iters:
            self.watchdog.now(f"iteration {self.iteration + 1}")
            self.housekeeping.before_step(self.iteration + 1)
            result = self.train_step()
            if cfg.training.check_for_nan_in_loss_and_grad:
                self._check_finite(result)
            last = self.iteration == cfg.training.train_iters
            console = self.iteration % cfg.logging.log_interval == 0 or last
            scalars = self.iteration % (cfg.logging.tensorboard_log_interval or cfg.logging.log_interval) == 0 or last
            if console or scalars:
                self._log(result, console, scalars)
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
            stop = self._stop_requested(started) if self.iteration % cfg.logging.log_interval == 0 else None
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
