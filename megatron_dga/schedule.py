"""Lengths given in samples or tokens, as Megatron allows, turned into iterations.

Megatron counts the training length, the warmup and the decay in iterations or in samples
(Megatron-DeepSpeed also in tokens). The global batch is fixed for a run here, so a length in
samples is a length in iterations: samples / global batch (tokens / (global batch x sequence
length)). This is done once, when the layout is known; the config then holds iterations only.
A length given twice (in iterations and in samples) is refused, as Megatron refuses it.
"""

from __future__ import annotations

from typing import Optional

from megatron_dga.config import PretrainConfig


class ScheduleError(ValueError):
    pass


def _one_of(**lengths) -> Optional[str]:
    given = [name for name, value in lengths.items() if value is not None]
    if len(given) > 1:
        raise ScheduleError(f"{' and '.join('--' + g.replace('_', '-') for g in given)} give the same length twice: "
                            f"keep one")
    return given[0] if given else None


def resolve_schedule(config: PretrainConfig, global_batch: int) -> None:
    t, o = config.training, config.optimizer
    seq = config.model.seq_length

    def iterations(samples: Optional[int] = None, tokens: Optional[int] = None) -> int:
        if samples is not None:
            return samples // global_batch
        return tokens // (global_batch * seq)

    which = _one_of(train_iters=t.train_iters, train_samples=t.train_samples, train_tokens=t.train_tokens)
    if which is None:
        raise ScheduleError("the length of training is missing: give --train-iters, --train-samples or --train-tokens")
    if which != "train_iters":
        t.train_iters = iterations(t.train_samples, t.train_tokens)
        t.train_samples = t.train_tokens = None
    if _one_of(lr_decay_iters=o.lr_decay_iters, lr_decay_samples=o.lr_decay_samples,
               lr_decay_tokens=o.lr_decay_tokens) in ("lr_decay_samples", "lr_decay_tokens"):
        o.lr_decay_iters = iterations(o.lr_decay_samples, o.lr_decay_tokens)
        o.lr_decay_samples = o.lr_decay_tokens = None
    warmup = _one_of(lr_warmup_iters=o.lr_warmup_iters or None, lr_warmup_samples=o.lr_warmup_samples,
                     lr_warmup_tokens=o.lr_warmup_tokens, lr_warmup_fraction=o.lr_warmup_fraction)
    if warmup in ("lr_warmup_samples", "lr_warmup_tokens"):
        o.lr_warmup_iters = iterations(o.lr_warmup_samples, o.lr_warmup_tokens)
    elif warmup == "lr_warmup_fraction":
        o.lr_warmup_iters = int(o.lr_warmup_fraction * (o.lr_decay_iters or t.train_iters))
    o.lr_warmup_samples = o.lr_warmup_tokens = o.lr_warmup_fraction = None
    if _one_of(lr_wsd_decay_iters=o.lr_wsd_decay_iters, lr_wsd_decay_samples=o.lr_wsd_decay_samples) \
            == "lr_wsd_decay_samples":
        o.lr_wsd_decay_iters = iterations(o.lr_wsd_decay_samples)
        o.lr_wsd_decay_samples = None
    if o.lr_decay_style == "WSD" and o.lr_wsd_decay_iters is None:
        raise ScheduleError("--lr-decay-style WSD needs --lr-wsd-decay-iters or --lr-wsd-decay-samples")
