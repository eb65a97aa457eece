"""The command line of `megatron_dga.pretrain`, generated from the config dataclasses.

This is the one place where flags map onto configuration: every field of every section of
`PretrainConfig` becomes a flag named after it (Megatron spelling, dashes), with the field's
default and help text, grouped by section in `--help`. Megatron's flags that are spelt or
treated differently here are translated first (`megatron_flags.py`). As in Megatron,
abbreviated flags are refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from typing import Optional, Sequence

from megatron_dga.config import PretrainConfig
from megatron_dga.megatron_flags import MegatronFlagError, translate
from megatron_dga.mixing.probe_budget import check_probe_budget
from megatron_dga.parallel.layout import probe_schedule_set_by_hand


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _scalar_type(tp):
    """int/float/str for a field annotation such as Optional[int] or List[str]."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return _scalar_type(args[0]) if args else tp


def _add_field(group, f: dataclasses.Field, tp) -> None:
    kwargs = {"dest": f.name, "help": f.metadata["help"]}
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    if f.metadata.get("required"):
        default = None  # given on the command line, or with --use-checkpoint-args by the checkpoint
        kwargs["help"] += " Required."
    if _scalar_type(tp) is bool:
        # Flags that default to on, or to "decided at run time" (None), can be turned off with --no-<flag>.
        action = argparse.BooleanOptionalAction if default is None or default else "store_true"
        group.add_argument(_flag(f), action=action, default=default, **kwargs)
        return
    if "nargs" in f.metadata:
        kwargs["nargs"] = f.metadata["nargs"]
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    kwargs["help"] += f" (default: {default})" if default not in (None, []) else ""
    group.add_argument(_flag(f), type=_scalar_type(tp), default=default, **kwargs)


def build_parser(config_cls=PretrainConfig) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="megatron-dga-pretrain",
        description="GPT pretraining on megatron-core and DeepSpeed with online data mixing.",
        allow_abbrev=False,
    )
    for section in dataclasses.fields(config_cls):
        section_cls = typing.get_type_hints(config_cls)[section.name]
        group = parser.add_argument_group(section.name)
        hints = typing.get_type_hints(section_cls)
        for f in dataclasses.fields(section_cls):
            _add_field(group, f, hints[f.name])
    return parser


def parse_args(argv: Optional[Sequence[str]] = None, config_cls=PretrainConfig) -> PretrainConfig:
    """Parse the command line into a config; flag errors exit with argparse's message."""
    return parse_args_with_notes(argv, config_cls)[0]


def parse_args_with_notes(argv: Optional[Sequence[str]] = None, config_cls=PretrainConfig):
    """The config, and the notes on Megatron flags that have nothing to act on here (printed
    once at start-up)."""
    import sys

    parser = build_parser(config_cls)
    try:
        argv, notes = translate(sys.argv[1:] if argv is None else list(argv))
    except MegatronFlagError as e:
        parser.error(str(e))
    namespace = parser.parse_args(argv)
    sections = {}
    for section in dataclasses.fields(config_cls):
        section_cls = typing.get_type_hints(config_cls)[section.name]
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(section_cls)}
        sections[section.name] = section_cls(**values)
    config = config_cls(**sections)
    try:
        if config.checkpoint.use_checkpoint_args:
            notes.extend(take_checkpoint_args(config, given={a.split('=')[0] for a in argv if a.startswith('--')}))
        check_required(config)
        check_flags(config)
    except ValueError as e:
        parser.error(str(e))
    return config, notes


def check_required(config: PretrainConfig) -> None:
    """The flags Megatron requires (the model's shape) are refused when missing, not filled with a
    default."""
    for section in dataclasses.fields(config):
        values = getattr(config, section.name)
        missing = [_flag(f) for f in dataclasses.fields(values) if f.metadata.get("required")
                   and getattr(values, f.name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} required (or --use-checkpoint-args with --load)")


def take_checkpoint_args(config: PretrainConfig, given) -> list:
    """--use-checkpoint-args: the model flags recorded in --load's newest checkpoint replace the
    command line's, as in Megatron; a note names each value the command line gave otherwise."""
    from megatron_dga.training.checkpointing import CheckpointError, model_args_from_checkpoint

    if not config.checkpoint.load:
        raise ValueError("--use-checkpoint-args needs --load (the checkpoint to read them from)")
    try:
        saved = model_args_from_checkpoint(config.checkpoint.load)
    except CheckpointError as e:
        raise ValueError(f"--use-checkpoint-args: {e}") from None
    notes = []
    fields = {f.name: f for f in dataclasses.fields(config.model)}
    for name, value in saved.items():
        flag = _flag(fields[name])
        current = getattr(config.model, name)
        if flag in given and current != value:
            notes.append(f"--use-checkpoint-args: {flag} {value} from the checkpoint, not {current}")
        setattr(config.model, name, value)
    return notes


def check_flags(config: PretrainConfig) -> None:
    """Flag combinations that are wrong whatever the machine. Layout checks that need the
    world size live in `parallel.layout`."""
    t, m, d = config.training, config.model, config.data
    if not m.add_position_embedding and m.position_embedding_type == "learned_absolute":
        m.position_embedding_type = "none"  # Megatron's --no-position-embedding
    if m.kv_channels is not None and m.kv_channels * m.num_attention_heads != m.hidden_size:
        raise ValueError(f"--kv-channels {m.kv_channels}: each head's dimension is --hidden-size / "
                         f"--num-attention-heads = {m.hidden_size // max(m.num_attention_heads, 1)} here")
    if m.rotary_percent != 1.0 and m.position_embedding_type != "rope":
        raise ValueError("--rotary-percent is for --position-embedding-type rope")
    if t.bf16 and t.fp16:
        raise ValueError("--bf16 and --fp16 are mutually exclusive")
    if t.accumulate_allreduce_grads_in_fp32 and not t.bf16:
        raise ValueError("--accumulate-allreduce-grads-in-fp32 is for --bf16 (fp32 training accumulates in fp32; "
                         "DeepSpeed's fp16 optimizers accumulate in fp16)")
    if t.grad_reduce_in_bf16 and not (t.bf16 and t.accumulate_allreduce_grads_in_fp32 is not False):
        raise ValueError("--grad-reduce-in-bf16 needs --bf16 with fp32 accumulation (the default with --bf16)")
    for name in ("num_layers", "hidden_size", "num_attention_heads", "seq_length"):
        if getattr(m, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive")
    if t.micro_batch_size <= 0 or (t.train_iters is not None and t.train_iters < 0):
        raise ValueError("--micro-batch-size must be positive and --train-iters non-negative")
    if sum(map(bool, (d.domains_manifest, d.data_path, d.mock_data))) != 1:
        raise ValueError("give exactly one of --domains-manifest, --data-path and --mock-data")
    if config.checkpoint.save_interval is not None and not config.checkpoint.save:
        raise ValueError("--save-interval needs --save")
    if config.logging.log_interval <= 0 or config.logging.eval_interval <= 0:
        raise ValueError("--log-interval and --eval-interval must be positive")
    mix = config.mixing
    if mix.mixing == "dga" and not d.specific_data_path:
        raise ValueError("--mixing dga needs --specific-data-path (the target task's data)")
    if mix.mixing == "importance" and bool(mix.importance_histogram) == bool(mix.importance_clusters):
        raise ValueError("--mixing importance needs exactly one of --importance-histogram and --importance-clusters")
    if mix.importance_clusters and not d.specific_data_path:
        raise ValueError("--importance-clusters needs --specific-data-path (the documents to assign)")
    if d.specific_train_samples is not None and d.specific_train_samples <= 0:
        raise ValueError("--specific-train-samples must be positive")
    if mix.dga_early_fraction is not None:
        if not 0.0 <= mix.dga_early_fraction < 1.0:
            raise ValueError(f"--dga-early-fraction {mix.dga_early_fraction} must be in [0, 1)")
        sized = probe_schedule_set_by_hand(mix)
        if sized:
            raise ValueError(f"--dga-early-fraction shapes the schedule --dga-probe-budget derives; {sized[0]} "
                             "sets it by hand")
    if mix.dga_probe_prefixes is not None:
        flag = "--dga-probe-prefixes" if mix.dga_probe_prefixes else "--no-dga-probe-prefixes"
        sized = probe_schedule_set_by_hand(mix)
        if sized:
            raise ValueError(f"{flag} shapes the probes of the schedule --dga-probe-budget derives; {sized[0]} "
                             "sets it by hand")
        if mix.dga_early_fraction == 0:
            raise ValueError(f"{flag} shapes the early phase's probes; --dga-early-fraction 0 turns it off")
    if not (math.isfinite(mix.dga_max_epochs) and mix.dga_max_epochs >= 0):
        raise ValueError(f"--dga-max-epochs {mix.dga_max_epochs} must be a number >= 0 (0: no bound)")
    if mix.dga_probe_microbatches is not None and mix.dga_probe_microbatches <= 0:
        raise ValueError("--dga-probe-microbatches must be positive")
    if mix.dga_probe_budget is not None:
        if mix.dga_update_interval is not None:
            raise ValueError("--dga-probe-budget sets the update interval when --dga-update-interval is not given: "
                             "give one of them")
        check_probe_budget(mix.dga_probe_budget)
