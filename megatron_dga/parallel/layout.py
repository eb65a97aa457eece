"""The parallel layout of a run (TP x PP x DP and the batch arithmetic), checked up front.

Every impossible combination is refused here with a message that names the flags, before any
process group, model or dataset is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

from megatron_dga.config import MixingConfig, PretrainConfig
from megatron_dga.schedule import ScheduleError, resolve_schedule


class LayoutError(ValueError):
    """A parallel layout or batch size that cannot work."""


@dataclass(frozen=True)
class Layout:
    world_size: int
    tp: int
    pp: int
    dp: int
    micro_batch_size: int
    global_batch_size: int
    sequence_parallel: bool = False  # only with TP > 1

    @property
    def grad_accumulation_steps(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.dp)

    def describe(self) -> str:
        described = f"TP={self.tp} PP={self.pp} DP={self.dp}"
        return described + " with sequence parallelism" if self.sequence_parallel else described


def resolve_layout(config: PretrainConfig, world_size: int) -> Layout:
    """Derive DP and the global batch from the flags, refusing impossible layouts."""
    par, model, train = config.parallel, config.model, config.training
    tp, pp = par.tensor_model_parallel_size, par.pipeline_model_parallel_size
    if tp < 1 or pp < 1:
        raise LayoutError("--tensor-model-parallel-size and --pipeline-model-parallel-size must be >= 1")
    if world_size % (tp * pp) != 0:
        raise LayoutError(
            f"world size {world_size} is not divisible by --tensor-model-parallel-size {tp} x "
            f"--pipeline-model-parallel-size {pp}"
        )
    dp = world_size // (tp * pp)
    mbs = train.micro_batch_size
    gbs = train.global_batch_size or mbs * dp
    if gbs % (mbs * dp) != 0:
        raise LayoutError(
            f"--global-batch-size {gbs} is not divisible by --micro-batch-size {mbs} x "
            f"data-parallel size {dp}"
        )
    if model.num_attention_heads % tp != 0:
        raise LayoutError(
            f"--num-attention-heads {model.num_attention_heads} is not divisible by "
            f"--tensor-model-parallel-size {tp}"
        )
    if model.group_query_attention:
        groups = model.num_query_groups
        if not groups or model.num_attention_heads % groups:
            raise LayoutError(f"--num-query-groups {groups} must divide --num-attention-heads "
                              f"{model.num_attention_heads} (with --group-query-attention)")
        if groups % tp:
            raise LayoutError(f"--num-query-groups {groups} is not divisible by --tensor-model-parallel-size {tp}")
    if model.hidden_size % model.num_attention_heads != 0:
        raise LayoutError(
            f"--hidden-size {model.hidden_size} is not divisible by --num-attention-heads "
            f"{model.num_attention_heads}"
        )
    ffn = model.ffn_hidden_size or 4 * model.hidden_size
    if model.hidden_size % tp != 0 or ffn % tp != 0:
        raise LayoutError(
            f"--hidden-size {model.hidden_size} and the MLP size {ffn} must be divisible by "
            f"--tensor-model-parallel-size {tp}"
        )
    if model.num_layers % pp != 0:
        raise LayoutError(
            f"--num-layers {model.num_layers} is not divisible by "
            f"--pipeline-model-parallel-size {pp}"
        )
    if pp > 1 and par.zero_stage > 1:
        raise LayoutError(
            f"--zero-stage {par.zero_stage} does not work with pipeline parallelism "
            f"(--pipeline-model-parallel-size {pp}); use ZeRO stage 0 or 1"
        )
    if train.bf16 and train.fp16:
        raise LayoutError("--bf16 and --fp16 are mutually exclusive")
    sequence_parallel = par.sequence_parallel and tp > 1
    if sequence_parallel and model.seq_length % tp:
        raise LayoutError(f"--sequence-parallel cuts each sequence over the tensor-parallel ranks: --seq-length "
                          f"{model.seq_length} is not divisible by --tensor-model-parallel-size {tp}")
    try:
        resolve_schedule(config, gbs)  # lengths in samples or tokens become iterations
    except ScheduleError as e:
        raise LayoutError(str(e)) from None
    layout = Layout(world_size, tp, pp, dp, mbs, gbs, sequence_parallel)
    per_rank = probe_batching(config.mixing, layout).microbatches  # refuses an indivisible --dga-probe-batch-size
    if config.mixing.dga_early_fraction and pp > 1:
        raise LayoutError("--dga-early-fraction cuts DGA's probe micro batches, which pipeline parallelism cannot "
                          "take (its stages exchange activations of training's shape)")
    if config.mixing.dga_probe_prefixes and pp > 1:
        raise LayoutError("--dga-probe-prefixes cuts DGA's probe sequences, which pipeline parallelism cannot take "
                          "(its stages exchange activations of training's shape)")
    if config.mixing.mixing == "dga" and config.mixing.dga_noise_shrink and per_rank * layout.dp < 2:
        raise LayoutError(f"--dga-noise-shrink needs a standard error for each score: 2 or more probe micro batches "
                          f"per source over all data-parallel ranks (here {per_rank} x DP {layout.dp}); raise "
                          "--dga-probe-microbatches")
    return layout


@dataclass(frozen=True)
class ProbeBatching:
    """DGA's probe micro batches per source on each data-parallel rank, and their sequences."""
    microbatches: int
    micro_batch_size: int

    def passes(self, train_micro_batch_size: int) -> float:
        """Probe passes per source on a rank, in training micro batches (cost follows sequences)."""
        return self.microbatches * self.micro_batch_size / train_micro_batch_size


def probe_batching(mixing: MixingConfig, layout: Layout) -> ProbeBatching:
    """--dga-probe-batch-size B split as training's batch is: micro batches of --micro-batch-size
    on every rank, or, below one micro batch per rank, one micro batch of B / DP sequences (not
    under pipeline parallelism, whose stages exchange activations of training's shape)."""
    probe_batch = mixing.dga_probe_batch_size
    mbs = layout.micro_batch_size
    if probe_batch is None:
        return ProbeBatching(mixing.dga_probe_microbatches or 1, mbs)
    share = mbs * layout.dp
    if 0 < probe_batch < share and probe_batch % layout.dp == 0:
        if layout.pp > 1:
            raise LayoutError(f"--dga-probe-batch-size {probe_batch} is below --micro-batch-size {mbs} x data-parallel "
                              f"size {layout.dp}: under pipeline parallelism the probes run in micro batches of "
                              f"training's size, so it must be a multiple of {share}")
        return ProbeBatching(1, probe_batch // layout.dp)
    if probe_batch <= 0 or probe_batch % share:
        raise LayoutError(f"--dga-probe-batch-size {probe_batch} is not a positive multiple of --micro-batch-size "
                          f"{mbs} x data-parallel size {layout.dp}, nor a multiple of DP {layout.dp} below it")
    return ProbeBatching(probe_batch // share, mbs)


def probe_schedule_set_by_hand(mixing: MixingConfig) -> List[str]:
    """The flags given that set DGA's update interval or probe size, which the probe budget then leaves alone."""
    return [flag for flag, value in (("--dga-update-interval", mixing.dga_update_interval),
                                     ("--dga-probe-batch-size", mixing.dga_probe_batch_size),
                                     ("--dga-probe-microbatches", mixing.dga_probe_microbatches)) if value is not None]


def probes_may_be_cut(mixing: MixingConfig, layout: Layout) -> bool:
    """Whether DGA's early phase may cut the probe micro batch below training's: not when the probe's size
    is given, nor under pipeline parallelism (whose stages exchange activations of training's shape)."""
    return not probe_schedule_set_by_hand(mixing) and layout.pp == 1
