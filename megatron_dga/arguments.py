"""The command line of `megatron_dga.pretrain`, generated from the config dataclasses.

This is the one place where flags map onto configuration: every field of every section of
`PretrainConfig` becomes a flag named after it (Megatron spelling, dashes), with the field's
default and help text, grouped by section in `--help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Optional, Sequence

from megatron_dga.config import PretrainConfig


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag", "--" + f.name.replace("_", "-"))


def _scalar_type(tp):
    """int/float/str for a field annotation such as Optional[int] or List[str]."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return _scalar_type(args[0]) if args else tp


def _add_field(group, f: dataclasses.Field, tp) -> None:
    kwargs = {"dest": f.name, "help": f.metadata["help"]}
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
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
    parser = build_parser(config_cls)
    namespace = parser.parse_args(argv)
    sections = {}
    for section in dataclasses.fields(config_cls):
        section_cls = typing.get_type_hints(config_cls)[section.name]
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(section_cls)}
        sections[section.name] = section_cls(**values)
    config = config_cls(**sections)
    try:
        check_flags(config)
    except ValueError as e:
        parser.error(str(e))
    return config


def check_flags(config: PretrainConfig) -> None:
    """Flag combinations that are wrong whatever the machine. Layout checks that need the
    world size live in `parallel.layout`."""
    t, m, d = config.training, config.model, config.data
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
    if t.micro_batch_size <= 0 or t.train_iters < 0:
        raise ValueError("--micro-batch-size must be positive and --train-iters non-negative")
    if bool(d.domains_manifest) == bool(d.data_path):
        raise ValueError("give exactly one of --domains-manifest and --data-path")
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
    if mix.dga_probe_microbatches <= 0:
        raise ValueError("--dga-probe-microbatches must be positive")
