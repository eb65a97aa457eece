"""Checkpoints in Megatron's layout, written so that a crash never breaks the last good one.

    <save>/latest_checkpointed_iteration.txt    the iteration of the newest complete checkpoint
    <save>/iter_0000100/                          DeepSpeed's files (model, optimizer, ZeRO shards)
                        metadata.json             layout, iteration, domains (read before loading)
                        rng/rank_00000.pt         RNG states of every rank

Every rank writes into `iter_XXXXXXX.partial/`; after a barrier rank 0 renames it to its final
name and then rewrites the tracker atomically (temporary file + rename). A crash at any point
leaves the tracker pointing at a complete checkpoint. The trainer's own state (iteration,
consumed samples, data position, mixing state, learning-rate schedule, arguments) travels in
DeepSpeed's `client_state`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core.tensor_parallel import random as mcore_random

from megatron_dga.files import atomic_open, write_json, write_text
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.layout import Layout

TRACKER = "latest_checkpointed_iteration.txt"
PARTIAL_SUFFIX = ".partial"


class CheckpointError(RuntimeError):
    pass


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def rng_state() -> Dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": mcore_random.get_cuda_rng_tracker().get_states(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    mcore_random.get_cuda_rng_tracker().set_states(state["tracker"])


def read_tracker(directory: str) -> Optional[int]:
    path = os.path.join(directory, TRACKER)
    if not os.path.isfile(path):
        return None
    text = open(path, encoding="utf-8").read().strip()
    try:
        return int(text)
    except ValueError:
        raise CheckpointError(f"{path}: expected an iteration number, found {text!r}") from None


def layout_dict(layout: Layout) -> Dict[str, int]:
    return {"tp": layout.tp, "pp": layout.pp, "dp": layout.dp}


def _describe(layout: Dict[str, int]) -> str:
    return f"TP={layout['tp']} PP={layout['pp']} DP={layout['dp']}"


class Checkpointer:
    def __init__(self, ctx: ParallelContext, engine):
        self.ctx = ctx
        self.engine = engine  # the DeepSpeed engine

    def save(self, directory: str, iteration: int, client_state: Dict[str, Any], metadata: Dict[str, Any]) -> str:
        name = checkpoint_name(iteration)
        staging = os.path.join(directory, name + PARTIAL_SUFFIX)
        final = os.path.join(directory, name)
        if self.ctx.rank == 0:
            os.makedirs(directory, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)  # left by a crashed save
        dist.barrier()
        self.engine.save_checkpoint(directory, tag=name + PARTIAL_SUFFIX, client_state=client_state,
                                    save_latest=False)
        rng_dir = os.path.join(staging, "rng")
        os.makedirs(rng_dir, exist_ok=True)
        rng_file = os.path.join(rng_dir, f"rank_{self.ctx.rank:05d}.pt")
        with atomic_open(rng_file, "wb") as f:
            torch.save(rng_state(), f)
        dist.barrier()
        if self.ctx.rank == 0:
            write_json(os.path.join(staging, "metadata.json"), metadata)
            if os.path.exists(final):  # saving an iteration again: replace it only when complete
                old = final + ".old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(staging, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, final)
            write_text(os.path.join(directory, TRACKER), f"{iteration}\n")
        dist.barrier()
        return final

    def read_metadata(self, directory: str) -> Optional[Dict[str, Any]]:
        iteration = read_tracker(directory)
        if iteration is None:
            return None
        path = os.path.join(directory, checkpoint_name(iteration), "metadata.json")
        try:
            with open(path, encoding="utf-8") as f:
                return json.load(f)
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise CheckpointError(f"checkpoint {path} is unreadable: {e}") from None

    def check_layout(self, metadata: Dict[str, Any], layout: Layout, loading_optimizer: bool, zero_stage: int) -> None:
        saved, now = metadata["layout"], layout_dict(layout)
        if (saved["tp"], saved["pp"]) != (now["tp"], now["pp"]):
            raise CheckpointError(
                f"checkpoint at iteration {metadata['iteration']} was saved with layout {_describe(saved)}; "
                f"this run uses {_describe(now)}. Tensor- and pipeline-parallel sizes must match."
            )
        if saved["dp"] != now["dp"] and loading_optimizer and zero_stage > 0:
            raise CheckpointError(
                f"checkpoint at iteration {metadata['iteration']} was saved with {_describe(saved)}; this run "
                f"uses {_describe(now)}. ZeRO-{zero_stage} optimizer shards need the same data-parallel "
                f"size (or --no-load-optim)."
            )

    def load(self, directory: str, load_optimizer: bool, load_rng: bool) -> Dict[str, Any]:
        iteration = read_tracker(directory)
        name = checkpoint_name(iteration)
        path, client_state = self.engine.load_checkpoint(
            directory, tag=name, load_optimizer_states=load_optimizer, load_lr_scheduler_states=False,
            load_module_strict=True,
        )
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {os.path.join(directory, name)}")
        if load_rng:
            rng_file = os.path.join(directory, name, "rng", f"rank_{self.ctx.rank:05d}.pt")
            set_rng_state(torch.load(rng_file, weights_only=False))
        return client_state
