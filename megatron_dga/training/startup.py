"""What the trainer builds before its first step, each piece from the config section it uses.

    data:     the domains, the tokenizer and the specific sets (training and held-out)
    engine:   the DeepSpeed engine around the model, with the run's optimizer and schedule
    mixing:   the importance histogram (for --importance-clusters), the alignment meter (DGA)
    batches:  this rank's training batches (read here, or shared from the first TP rank)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core import parallel_state

from megatron_dga.config import DataConfig, MixingConfig, ModelConfig, PretrainConfig
from megatron_dga.data.batches import PrefetchedBatches, TensorParallelSharedBatches, TrainBatches
from megatron_dga.data.domains import Domain, TokenizerSummary, open_domains, open_specific_sets
from megatron_dga.data.sequences import FewExamples
from megatron_dga.mixing.alignment import AlignmentMeter
from megatron_dga.mixing.gradients import SequentialProbeGradients
from megatron_dga.mixing.importance import assign_to_clusters
from megatron_dga.mixing.pipeline_probes import PipelineProbeGradients
from megatron_dga.mixing.preconditioner import AdamPreconditioner
from megatron_dga.mixing.probes import ProbeData
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.layout import LayoutError, probe_batching
from megatron_dga.training.deepspeed_config import derive_config, fp32_accumulation, load_user_config
from megatron_dga.training.engine import TrainingEngine


def model_vocab_size(model: ModelConfig, tokenizer_vocab: Optional[int], tokenizer_type: Optional[str] = None
                     ) -> int:
    """The unpadded model vocabulary: --vocab-size, else the tokenizer's. NullTokenizer's
    --vocab-size counts its ids without the end of document, which is one more (Megatron's)."""
    requested = model.vocab_size
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


@dataclass
class TrainingData:
    """The run's data, opened: every stream knows the model's vocabulary (a token id beyond it
    is a data error, not an index error)."""
    domains: List[Domain]
    data_path_weights: Optional[List[float]]  # --data-path's weights, if it gave any
    tokenizer: TokenizerSummary
    vocab_size: int  # the model's, unpadded
    specific_train: object  # a SequenceStream, or FewExamples with --specific-train-samples
    specific_valid: object  # a SequenceStream, or None

    @property
    def domain_names(self) -> List[str]:
        return [d.name for d in self.domains]


def open_training_data(data: DataConfig, model: ModelConfig, seed: int) -> TrainingData:
    domains, weights, tokenizer = open_domains(data, model.seq_length, seed, model.vocab_size)
    vocab = model_vocab_size(model, tokenizer.vocab_size, tokenizer.type)
    specific_train, specific_valid = open_specific_sets(data, model.seq_length, seed)
    specific_streams = [getattr(specific_train, "stream", specific_train), specific_valid]
    for stream in [s for d in domains for s in (d.train, d.valid)] + specific_streams:
        if stream is not None:
            stream.vocab_size = vocab
    return TrainingData(domains, weights, tokenizer, vocab, specific_train, specific_valid)


def build_engine(model: torch.nn.Module, config: PretrainConfig, ctx: ParallelContext) -> TrainingEngine:
    """The DeepSpeed engine. Its config is the one translation of the whole run config into
    DeepSpeed's (training/deepspeed_config.py), merged with --deepspeed_config."""
    user = load_user_config(config.training.deepspeed_config)
    if ctx.rank == 0 and fp32_accumulation(config, user) and config.parallel.zero_stage == 0:
        print("--bf16: gradients accumulate and are all-reduced in fp32 (Megatron's "
              "--accumulate-allreduce-grads-in-fp32), by DeepSpeed's BF16_Optimizer, a ZeRO-1 optimizer: "
              "--zero-stage 0 runs as ZeRO-1 (--no-accumulate-allreduce-grads-in-fp32 keeps ZeRO-0)", flush=True)
    return TrainingEngine(model, ctx, derive_config(config, ctx.layout, user), config.optimizer,
                          config.training.train_iters, user)


def importance_histogram(data: TrainingData, clusters: str, ctx: ParallelContext) -> np.ndarray:
    """Rank 0 assigns what training knows of the specific set (its documents, or only the
    --specific-train-samples sequences), turned back into text, to the clusters of
    --importance-clusters; every rank receives the weights."""
    result = [None]
    if ctx.rank == 0:
        tokenizer = data.tokenizer.build()
        if isinstance(data.specific_train, FewExamples):
            token_lists = [seq.tolist() for seq in data.specific_train.examples()]
        else:
            dataset = data.specific_train.dataset
            token_lists = [dataset.get(i).tolist() for i in range(len(dataset))]
        texts = [tokenizer.detokenize(tokens) for tokens in token_lists]
        result[0] = assign_to_clusters(clusters, texts, data.domain_names)
    dist.broadcast_object_list(result, src=0)
    return result[0]


def build_alignment_meter(mixing: MixingConfig, data: TrainingData, bases: np.ndarray, engine: TrainingEngine,
                          ctx: ParallelContext, eod_mask_loss: bool) -> AlignmentMeter:
    """DGA's meter: probes read ahead in the domains' own training streams (mixing/probes.py);
    gradients by hooks, or through the pipeline's stages; Adam's preconditioner for
    --dga-alignment adam."""
    batching = probe_batching(mixing, ctx.layout)
    probes = ProbeData([d.train for d in data.domains], data.specific_train, bases, ctx.layout, ctx.dp_rank,
                       batching.microbatches, data.tokenizer.eod, eod_mask_loss, batching.micro_batch_size)
    if engine.pipelined:
        gradients = PipelineProbeGradients(engine.engine, ctx.device)
    else:
        gradients = SequentialProbeGradients(engine.module, ctx.device, engine.engine)
    preconditioner = None
    if mixing.dga_alignment == "adam":
        preconditioner = AdamPreconditioner(engine.engine, gradients.layout, ctx.dp_group, ctx.layout.dp)
    return AlignmentMeter(gradients, probes, ctx, mixing.dga_alignment, preconditioner)


def batch_source(batches: TrainBatches, ctx: ParallelContext, seq_length: int):
    """This rank's training batches: its own reads, or with TP the first rank's, shared."""
    reads = ctx.tp_rank == 0
    reader = PrefetchedBatches(batches, pin_memory=torch.cuda.is_available()) if reads else None
    if ctx.layout.tp == 1:
        return reader
    return TensorParallelSharedBatches(reader, ctx.layout, seq_length, ctx.device, ctx.tp_group,
                                       parallel_state.get_tensor_model_parallel_src_rank())
