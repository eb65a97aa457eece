"""Resume a checkpoint under another tensor-, pipeline- or data-parallel layout (`--reshard`).

A checkpoint holds DeepSpeed's files for the layout that saved it: per model-parallel rank, the
weights and either a torch optimizer's state (ZeRO-0, with DeepSpeed's fp16/bf16 wrapper's fp32
masters) or, under ZeRO-1/2 and DeepSpeed's bf16 optimizer, one flat partition per
data-parallel rank with `param_slice_mappings` naming each parameter's fragment in it.

Reading turns these into one layout-free training state: for every parameter (merged names,
as `export.load_merged_state_dict`), its full fp32 weight and Adam moments, and Adam's step.
Loading puts this rank's share of that state into the live engine of the new layout: its
tensor-parallel shard of each parameter and, under ZeRO, its fragment of each flat partition,
through the fragment addresses DeepSpeed keeps on every parameter (`_hp_mapping`). The base
optimizer (torch's AdamW in every case) receives its moments through its own `load_state_dict`.

Every rank reads the checkpoint's files one at a time and keeps the full state, so a rank needs
host memory for the model's fp32 weights and moments (16 bytes per parameter).
"""

from __future__ import annotations

import glob
import json
import os
import re
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from megatron_dga.training.checkpointing import CheckpointError
from megatron_dga.training.export import load_merged_state_dict, merge_parameter, shard_of

MOMENTS = ("exp_avg", "exp_avg_sq")
MODEL_FILE = re.compile(r"mp_rank_(\d+)_model_states\.pt$")
PARTITION_FILE = re.compile(r"zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")


@dataclass
class TrainingState:
    """The layout-free state of a checkpoint: full fp32 tensors by parameter name."""

    weights: Dict[str, torch.Tensor]
    moments: Dict[str, Dict[str, torch.Tensor]]  # name -> {"exp_avg": ..., "exp_avg_sq": ...}
    step: Optional[float]
    client_state: Dict
    lr_scheduler: Optional[Dict] = None
    padded_vocab_size: Optional[int] = None


# ---- what a checkpoint must record for this ------------------------------------------------
def optimizer_parameter_names(engine) -> Optional[List[List[str]]]:
    """Names of the parameters of each group of a ZeRO-0 optimizer, in its order, for the
    client state: a torch optimizer's state dict knows its parameters only by position. ZeRO and
    DeepSpeed's bf16 optimizer record names themselves (`param_slice_mappings`): None."""
    names = {id(p): n for n, p in engine.module.named_parameters()}
    optimizer = engine.optimizer
    if hasattr(optimizer, "fp16_groups") and hasattr(optimizer, "fp32_groups"):  # fp16/bf16 wrapper, ZeRO-0
        groups = optimizer.fp16_groups
    elif isinstance(optimizer, torch.optim.Optimizer) and not _is_partitioned(optimizer):
        groups = [group["params"] for group in optimizer.param_groups]
    else:
        return None
    return [[names[id(p)] for p in group] for group in groups]


def _is_partitioned(optimizer) -> bool:
    return hasattr(optimizer, "single_partition_of_fp32_groups") or hasattr(optimizer, "fp32_groups_flat_partition")


# ---- reading ---------------------------------------------------------------------------------
def read_training_state(directory: str, with_optimizer: bool = True) -> TrainingState:
    """The full state of the checkpoint in `directory` (an `iter_XXXXXXX` folder)."""
    with open(os.path.join(directory, "metadata.json"), encoding="utf-8") as f:
        metadata = json.load(f)
    tp = metadata["layout"]["tp"]
    shards: List[Dict[str, Dict[str, torch.Tensor]]] = [{} for _ in range(tp)]  # tp rank -> name -> tensors
    steps, client_state, lr_scheduler = set(), None, None
    model_files = sorted(glob.glob(os.path.join(directory, "mp_rank_*_model_states.pt")))
    if not model_files:
        raise CheckpointError(f"{directory} has no mp_rank_*_model_states.pt: not a complete checkpoint")
    for path in model_files:
        mp_rank = int(MODEL_FILE.search(path).group(1))
        states = torch.load(path, map_location="cpu", weights_only=False)
        if states.get("config", {}).get("training", {}).get("fp16"):
            raise CheckpointError(f"{directory} is an fp16 run: its loss scale and fp16 optimizer state do not "
                                  f"reshard; resume it in its own layout")
        if client_state is None:
            client_state = {k: v for k, v in states.items() if k in ("iteration", "consumed_samples", "blend",
                                                                       "mixing", "scheduler", "probes", "domains")}
            lr_scheduler = states.get("lr_scheduler")
        if not with_optimizer:
            continue
        ranks = states.get("parallel_ranks")
        if ranks is None:
            raise CheckpointError(f"{path} does not say which tensor-parallel rank wrote it: the checkpoint "
                                  f"predates --reshard; resume it in its own layout")
        partitions = _partition_files(directory, mp_rank)
        found = _read_partitions(partitions) if partitions else _read_unpartitioned(path, states)
        shapes = states["parameter_shapes"]
        for name, tensors in found.items():
            steps.add(tensors.pop("step"))
            tensors = {key: None if t is None else t.reshape(shapes[name]) for key, t in tensors.items()}
            shards[ranks["tp"]].setdefault(name, tensors)  # the tied embedding: the same on both stages
    if len(steps) > 1:
        raise CheckpointError(f"{directory}: Adam's step differs between parameters ({sorted(steps)})")

    merged_weights = load_merged_state_dict(directory)  # the model's own weights (fp32 runs: the masters)
    weights, moments = {}, {}
    for name, weight in merged_weights.items():
        if with_optimizer:
            if name not in shards[0]:
                raise CheckpointError(f"{directory}: no optimizer state for {name}")
            merged = {key: merge_parameter(metadata["sharding"], name, [shards[r][name][key] for r in range(tp)])
                      for key in ("fp32", *MOMENTS) if shards[0][name].get(key) is not None}
            weights[name] = merged.get("fp32", weight.float())
            moments[name] = {key: merged[key] for key in MOMENTS}
        else:
            weights[name] = weight.float()
    return TrainingState(weights, moments, steps.pop() if steps else None, client_state or {}, lr_scheduler,
                         metadata.get("padded_vocab_size"))


def _partition_files(directory: str, mp_rank: int) -> List[str]:
    """ZeRO-1/2 (or bf16 optimizer) partitions of one model-parallel rank, in data-parallel order."""
    found = []
    for path in glob.glob(os.path.join(directory, f"*zero_pp_rank_*_mp_rank_{mp_rank:02d}_optim_states.pt")):
        found.append((int(PARTITION_FILE.search(path).group(1)), path))
    return [path for _, path in sorted(found)]


def _read_partitions(paths: List[str]) -> Dict[str, Dict[str, torch.Tensor]]:
    """name -> {fp32, exp_avg, exp_avg_sq (flat, this model-parallel rank's shard), step} from the
    flat partitions of every data-parallel rank: a parameter's fragments, in rank order, are
    its flattened values."""
    fragments: Dict[str, Dict[str, List[torch.Tensor]]] = {}
    step = None
    for path in paths:
        state = torch.load(path, map_location="cpu", weights_only=False)["optimizer_state_dict"]
        base = state["base_optimizer_state"]
        for g, mapping in enumerate(state["param_slice_mappings"]):
            group_state = base[g] if isinstance(base, list) else base["state"][g]
            flats = {"fp32": state["single_partition_of_fp32_groups"][g],
                     **{key: group_state[key] for key in MOMENTS}}
            step = float(group_state["step"])
            for name, address in mapping.items():
                entry = fragments.setdefault(name, {key: [] for key in flats})
                for key, flat in flats.items():
                    entry[key].append(flat.narrow(0, address.start, address.numel).float())
    return {name: {**{key: torch.cat(parts) for key, parts in entry.items()}, "step": step}
            for name, entry in fragments.items()}


def _read_unpartitioned(path: str, states: Dict) -> Dict[str, Dict[str, torch.Tensor]]:
    """name -> {fp32 (None: the model's own weights), exp_avg, exp_avg_sq, step} from a torch
    optimizer's state dict (ZeRO-0), or from DeepSpeed's fp16/bf16 wrapper of one."""
    optimizer = states.get("optimizer")
    names = states.get("optimizer_parameters")
    if optimizer is None or names is None:
        raise CheckpointError(f"{path} holds no optimizer state that names its parameters")
    masters: List[Optional[torch.Tensor]]
    if "optimizer_state_dict" in optimizer:  # DeepSpeed's unfused fp16/bf16 wrapper: fp32 masters
        torch_state = optimizer["optimizer_state_dict"]
        masters = [t for group in optimizer["fp32_groups"] for t in group]
    else:
        torch_state = optimizer
        masters = [None] * sum(len(group) for group in names)
    found = {}
    position = 0
    for group_names, group in zip(names, torch_state["param_groups"]):
        if len(group_names) != len(group["params"]):
            raise CheckpointError(f"{path}: the optimizer's groups do not match the names recorded with them")
        for name, index in zip(group_names, group["params"]):
            state = torch_state["state"].get(index)
            if state is None:
                raise CheckpointError(f"{path}: no optimizer state for {name} (saved before the first step?)")
            master = masters[position]
            found[name] = {"fp32": None if master is None else master.float().flatten(),
                           **{key: state[key].float().flatten() for key in MOMENTS}, "step": float(state["step"])}
            position += 1
    return found


# ---- loading into the engine of the new layout --------------------------------------------------
class _Target:
    """This rank's share of a TrainingState: the tensor-parallel shard of each parameter."""

    def __init__(self, state: TrainingState, tp: int, tp_rank: int, padded_vocab_size: int):
        self.state, self.tp, self.tp_rank, self.padded_vocab_size = state, tp, tp_rank, padded_vocab_size

    def shard(self, name: str, param: torch.Tensor, key: str) -> torch.Tensor:
        if name not in self.state.weights:
            raise CheckpointError(f"the checkpoint has no parameter {name} of this model")
        full = self.state.weights[name] if key == "fp32" else self.state.moments[name][key]
        full = shard_of(param, self._fit_vocabulary(full), self.tp, self.tp_rank)
        if tuple(full.shape) != tuple(param.shape):
            raise CheckpointError(f"{name}: the checkpoint's shard has shape {tuple(full.shape)}, this model's "
                                  f"{tuple(param.shape)}; the model flags must be those of the saved run")
        return full

    def _fit_vocabulary(self, full: torch.Tensor) -> torch.Tensor:
        """The rows past the vocabulary are padding, sized for the saving layout's TP: trim or
        zero-pad them to this layout's."""
        old = self.state.padded_vocab_size
        if old is None or old == self.padded_vocab_size or full.dim() == 0 or full.shape[0] != old:
            return full
        if self.padded_vocab_size < old:
            return full[: self.padded_vocab_size]
        padding = full.new_zeros((self.padded_vocab_size - old, *full.shape[1:]))
        return torch.cat([full, padding])


def load_into_engine(engine, state: TrainingState, tp: int, tp_rank: int, padded_vocab_size: int,
                     with_optimizer: bool) -> None:
    """Copy this rank's share of `state` into a freshly built DeepSpeed engine."""
    target = _Target(state, tp, tp_rank, padded_vocab_size)
    names = {id(p): n for n, p in engine.module.named_parameters()}
    with torch.no_grad():
        for name, param in engine.module.named_parameters():
            param.copy_(target.shard(name, param, "fp32").to(param.dtype))
        optimizer = engine.optimizer
        if _is_partitioned(optimizer):
            _load_partitioned(optimizer, target, names, with_optimizer, state.step)
        elif hasattr(optimizer, "fp16_groups") and hasattr(optimizer, "fp32_groups"):
            _load_per_parameter(optimizer.optimizer, optimizer.fp16_groups, optimizer.fp32_groups, target, names,
                                with_optimizer, state.step)
        else:
            groups = [group["params"] for group in optimizer.param_groups]
            _load_per_parameter(optimizer, groups, groups, target, names, with_optimizer, state.step)
    if with_optimizer and state.lr_scheduler is not None and engine.lr_scheduler is not None:
        engine.lr_scheduler.load_state_dict(state.lr_scheduler)


def _load_per_parameter(base, lp_groups, hp_groups, target: _Target, names, with_optimizer: bool, step) -> None:
    moments = {}
    index = 0
    for lp_group, hp_group in zip(lp_groups, hp_groups):
        for lp, hp in zip(lp_group, hp_group):
            name = names[id(lp)]
            hp.copy_(target.shard(name, lp, "fp32").to(hp.dtype))
            moments[index] = {key: target.shard(name, lp, key).to(hp.dtype).clone() for key in MOMENTS}
            index += 1
    if with_optimizer:
        _load_base_state(base, moments, step)


def _load_partitioned(optimizer, target: _Target, names, with_optimizer: bool, step) -> None:
    """ZeRO-1/2 or the bf16 optimizer: each flat fp32 partition is rebuilt from the fragments of
    the parameters it holds (`_hp_mapping`: where in the parameter, where in the partition)."""
    if hasattr(optimizer, "single_partition_of_fp32_groups"):
        lp_groups, flats = optimizer.bit16_groups, optimizer.single_partition_of_fp32_groups
    else:
        lp_groups, flats = optimizer.bf16_groups, optimizer.fp32_groups_flat_partition
    moments = {}
    for g, (lp_group, flat) in enumerate(zip(lp_groups, flats)):
        values = {key: torch.zeros_like(flat) for key in ("fp32", *MOMENTS)}
        for lp in lp_group:
            mapping = getattr(lp, "_hp_mapping", None)
            if mapping is None:
                continue  # no fragment of it in this rank's partition
            lp_start, numel = mapping.lp_fragment_address.start, mapping.lp_fragment_address.numel
            hp_start = mapping.hp_fragment_address.start
            for key, value in values.items():
                source = target.shard(names[id(lp)], lp, key).flatten().narrow(0, lp_start, numel)
                value.narrow(0, hp_start, numel).copy_(source)
        flat.copy_(values["fp32"])
        moments[g] = {key: values[key] for key in MOMENTS}
    if with_optimizer:
        _load_base_state(optimizer.optimizer, moments, step)


def _load_base_state(base: torch.optim.Optimizer, moments: Dict[int, Dict[str, torch.Tensor]], step) -> None:
    """Adam's moments and step through the torch optimizer's own loader, which puts the step
    where its fused and capturable forms want it."""
    if step is None:
        return
    current = base.state_dict()
    state = {index: {"step": torch.tensor(float(step)), **values} for index, values in moments.items()}
    base.load_state_dict({"state": state, "param_groups": current["param_groups"]})
