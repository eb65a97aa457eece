"""Merge a checkpoint's tensor- and pipeline-parallel shards into one state dict.

Parameter names are those of the model on one rank (`SequentialGPT`): `tied_modules.embed.*`
for the embedding (tied to the LM head) and `<layer index>.*` for the other layers, which is
also how DeepSpeed names the layers of a pipeline. The checkpoint's metadata records how each
tensor-parallel parameter is split (`sharding`: name -> [partition dim, stride]), so shards are
put back exactly as megatron-core cut them from the full weight.
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Dict, List

import torch

from megatron_dga.model.gpt import TIED_KEY
from megatron_dga.training.checkpointing import CheckpointError, checkpoint_name, read_tracker


def sharding_map(model: torch.nn.Module) -> Dict[str, List[int]]:
    """name -> [partition dim, stride] of this rank's tensor-parallel parameters."""
    return {
        name: [int(p.partition_dim), int(getattr(p, "partition_stride", 1))]
        for name, p in model.named_parameters()
        if getattr(p, "tensor_model_parallel", False)
    }


def merge_shards(shards: List[torch.Tensor], dim: int, stride: int) -> torch.Tensor:
    """Inverse of megatron-core's split: rank r holds chunks r, r + tp, r + 2 tp, ... of the
    full weight cut into tp x stride pieces along `dim`."""
    pieces = [torch.chunk(shard, stride, dim=dim) for shard in shards]
    return torch.cat([pieces[r][s] for s in range(stride) for r in range(len(shards))], dim=dim)


def split_shard(full: torch.Tensor, dim: int, stride: int, tp: int, rank: int) -> torch.Tensor:
    """megatron-core's split: rank `rank`'s shard of a full weight (inverse of merge_shards)."""
    pieces = torch.chunk(full, tp * stride, dim=dim)
    return torch.cat([pieces[s * tp + rank] for s in range(stride)], dim=dim)


def merge_parameter(sharding: Dict[str, List[int]], name: str, pieces: List[torch.Tensor]) -> torch.Tensor:
    """A full parameter from its pieces in tensor-parallel rank order (a replicated one: rank 0's)."""
    if name in sharding:
        dim, stride = sharding[name]
        return merge_shards(pieces, dim, stride)
    return pieces[0]


def shard_of(param: torch.Tensor, full: torch.Tensor, tp: int, tp_rank: int) -> torch.Tensor:
    """This rank's piece of a full parameter: its tensor-parallel shard, or all of it."""
    if getattr(param, "tensor_model_parallel", False):
        return split_shard(full, int(param.partition_dim), int(getattr(param, "partition_stride", 1)), tp, tp_rank)
    return full


def load_full_weights_into(module: torch.nn.Module, full: Dict[str, torch.Tensor], tp: int, tp_rank: int,
                           source: str) -> None:
    """Copy full-size parameters (merged names) into this rank's module: its tensor-parallel
    shard of each, whatever the layout. Every parameter of the module must be in `full`."""
    missing = [name for name, _ in module.named_parameters() if name not in full]
    if missing:
        raise CheckpointError(f"{source} has no weights for {len(missing)} parameters of this model "
                              f"({', '.join(missing[:3])} ...)")
    with torch.no_grad():
        for name, param in module.named_parameters():
            value = shard_of(param, full[name], tp, tp_rank)
            if tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"{source}: {name} has shape {tuple(value.shape)}, this model's "
                                      f"{tuple(param.shape)}")
            param.copy_(value.to(param.dtype))


def _tp_state_dicts_sequential(directory: str, tp: int) -> List[Dict[str, torch.Tensor]]:
    dicts = []
    for rank in range(tp):
        path = os.path.join(directory, f"mp_rank_{rank:02d}_model_states.pt")
        dicts.append(torch.load(path, map_location="cpu", weights_only=False)["module"])
    return dicts


def _tp_state_dicts_pipeline(directory: str, tp: int) -> List[Dict[str, torch.Tensor]]:
    dicts: List[Dict[str, torch.Tensor]] = [{} for _ in range(tp)]
    pattern = re.compile(r"layer_(\d+)-model_(\d+)-model_states\.pt$")
    for path in sorted(glob.glob(os.path.join(directory, "layer_*-model_states.pt"))):
        match = pattern.search(os.path.basename(path))
        if match is None:
            continue
        layer, rank = int(match.group(1)), int(match.group(2))
        prefix = f"tied_modules.{TIED_KEY}." if layer == 0 else f"{layer}."
        for key, value in torch.load(path, map_location="cpu", weights_only=False).items():
            dicts[rank][prefix + key] = value
    return dicts


def load_merged_state_dict(directory: str) -> Dict[str, torch.Tensor]:
    """Full parameters of the checkpoint in `directory` (an `iter_XXXXXXX` folder)."""
    metadata_path = os.path.join(directory, "metadata.json")
    try:
        with open(metadata_path, encoding="utf-8") as f:
            metadata = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"not a megatron-dga checkpoint (no {metadata_path})") from None
    missing = [key for key in ("layout", "sharding") if key not in metadata]
    if missing:
        raise CheckpointError(f"{metadata_path} has no {' and no '.join(missing)}: it cannot be merged")
    tp, pp = metadata["layout"]["tp"], metadata["layout"]["pp"]
    per_rank = _tp_state_dicts_pipeline(directory, tp) if pp > 1 else _tp_state_dicts_sequential(directory, tp)
    merged = {}
    for name, tensor in per_rank[0].items():
        if not torch.is_tensor(tensor) or name.endswith("._extra_state"):
            continue
        merged[name] = merge_parameter(metadata["sharding"], name, [sd[name] for sd in per_rank])
    return merged


def checkpoint_dir(save_dir: str, iteration=None) -> str:
    """The folder of checkpoint `iteration` under `save_dir` (default: the latest); it must exist."""
    directory = (os.path.join(save_dir, checkpoint_name(iteration)) if iteration is not None
                 else latest_checkpoint_dir(save_dir))
    if not os.path.isdir(directory):
        raise CheckpointError(f"no checkpoint folder {directory}")
    return directory


def latest_checkpoint_dir(save_dir: str) -> str:
    iteration = read_tracker(save_dir)
    if iteration is None:
        raise CheckpointError(f"no checkpoint in {save_dir} (latest_checkpointed_iteration.txt is missing)")
    return os.path.join(save_dir, checkpoint_name(iteration))
