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

import errno
import json
import os
import random
import shutil
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from megatron.core.tensor_parallel import random as mcore_random

from megatron_dga.files import atomic_open, fsync_tree, write_json, write_text
from megatron_dga.parallel.initialize import ParallelContext
from megatron_dga.parallel.layout import Layout

TRACKER = "latest_checkpointed_iteration.txt"
PARTIAL_SUFFIX = ".partial"


class CheckpointError(RuntimeError):
    pass


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:07d}"


def rng_device() -> str:
    """Whose generator formats a rank's RNG state holds: the model-parallel tracker keeps CUDA
    generator states on a GPU and CPU ones on the CPU (the CPU shim), which do not convert."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def rng_state() -> Dict[str, Any]:
    return {
        "device": rng_device(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "tracker": mcore_random.get_cuda_rng_tracker().get_states(),
    }


def set_rng_state(state: Dict[str, Any]) -> bool:
    """Restore a rank's generators; False, restoring nothing, when the state was saved on
    another kind of device (a CPU checkpoint resumed on a GPU, or the other way round): the
    caller seeds the generators from --seed and the iteration instead."""
    if state.get("device", "cpu") != rng_device():
        return False
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    mcore_random.get_cuda_rng_tracker().set_states(state["tracker"])
    return True


def damaged_files(folder: str) -> List[str]:
    """The torch files of a checkpoint folder that are not whole zip archives (torch.save's
    format): a file cut short by a full disk or a copy that did not finish has no central
    directory at its end."""
    import zipfile

    damaged = []
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            if name.endswith(".pt"):
                path = os.path.join(root, name)
                try:
                    with zipfile.ZipFile(path):
                        pass
                except (zipfile.BadZipFile, OSError):
                    damaged.append(path)
    return damaged


def check_checkpoint_files(directory: str, iteration: int) -> None:
    """Refuse a checkpoint with a damaged file, naming it and the newest intact checkpoint."""
    damaged = damaged_files(os.path.join(directory, checkpoint_name(iteration)))
    if not damaged:
        return
    older = sorted((int(name[5:]) for name in os.listdir(directory)
                    if name.startswith("iter_") and name[5:].isdigit() and int(name[5:]) < iteration), reverse=True)
    intact = next((it for it in older if not damaged_files(os.path.join(directory, checkpoint_name(it)))), None)
    fallback = (f"the newest intact one is iteration {intact}: write {intact} into {directory}/{TRACKER} to resume "
                f"from it" if intact is not None else "no older checkpoint is intact")
    raise CheckpointError(f"{damaged[0]} is truncated or corrupt (not a whole torch file); checkpoint iteration "
                          f"{iteration} cannot be loaded, and {fallback}")


# The flags that decide the parameters' shapes and names, as a checkpoint records them.
SHAPE_FLAGS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "group_query_attention",
               "num_query_groups", "swiglu", "normalization", "disable_bias_linear",
               "untie_embeddings_and_output_weights", "position_embedding_type", "max_position_embeddings",
               "qk_layernorm")


def model_shape_mismatch(saved: Dict[str, Any], current: Dict[str, Any], directory: str) -> Optional[str]:
    """The flags whose values differ between a checkpoint's model and this run's, named with both
    values; None when the shapes agree."""
    differ = [f"--{name.replace('_', '-')} {saved[name]} there, {current[name]} here" for name in SHAPE_FLAGS
              if name in saved and saved[name] != current.get(name)]
    if not differ:
        return None
    return f"{directory} holds another model: {'; '.join(differ)}. Resume with the checkpoint's flags"


# The model flags --use-checkpoint-args takes from a checkpoint: what defines the model, not how
# it runs (dropout, fusions, recompute and the attention backend stay the command line's).
MODEL_ARGS = SHAPE_FLAGS + ("seq_length", "add_position_embedding", "rotary_base", "rotary_percent", "kv_channels",
                            "layernorm_epsilon", "openai_gelu", "vocab_size", "make_vocab_size_divisible_by",
                            "transformer_impl")


def model_args_from_checkpoint(directory: str) -> Dict[str, Any]:
    """MODEL_ARGS as the newest checkpoint in `directory` records them."""
    iteration = read_tracker(directory)
    if iteration is None:
        raise CheckpointError(f"no checkpoint in {directory} ({directory}/{TRACKER} is missing)")
    path = os.path.join(directory, checkpoint_name(iteration), "metadata.json")
    try:
        with open(path, encoding="utf-8") as f:
            model = json.load(f).get("model")
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is unreadable: {e}") from None
    if not model:
        raise CheckpointError(f"{path} records no model flags")
    return {name: model[name] for name in MODEL_ARGS if name in model}


LAYER_NAMES = {"local": "megatron-core's local layers", "transformer_engine": "Transformer Engine's layers"}


def check_same_layers(metadata: Dict[str, Any], used: str, directory: str) -> None:
    """A checkpoint resumes only into the layer implementation it was saved with: their
    parameter names differ. Checkpoints that do not record it were saved with local layers."""
    saved = metadata.get("transformer_impl", "local")
    if saved != used:
        raise CheckpointError(f"{directory} was saved with {LAYER_NAMES[saved]}, this run uses {LAYER_NAMES[used]} "
                              f"(their parameter names differ): resume with --transformer-impl {saved}")


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


def describe_layout(layout: Dict[str, int]) -> str:
    return f"TP={layout['tp']} PP={layout['pp']} DP={layout['dp']}"


class Checkpointer:
    def __init__(self, ctx: ParallelContext, engine, save_rng: bool = True):
        self.ctx = ctx
        self.engine = engine  # the DeepSpeed engine
        self.save_rng = save_rng  # --no-save-rng: a resume seeds its generators from --seed and the iteration

    def save(self, directory: str, iteration: int, client_state: Dict[str, Any], metadata: Dict[str, Any]) -> str:
        """Write the checkpoint; on any rank's failure (a full disk, a lost mount) every rank
        raises CheckpointError naming the path, the staging folder is removed and the tracker
        still names the previous checkpoint."""
        name = checkpoint_name(iteration)
        staging = os.path.join(directory, name + PARTIAL_SUFFIX)
        final = os.path.join(directory, name)
        failure = self._on_every_rank(lambda: self._prepare(directory, staging))
        if failure is None:
            failure = self._on_every_rank(lambda: self._write(directory, name, staging, client_state))
        if failure is None and self.ctx.rank == 0:
            failure = self._publish(directory, staging, final, iteration, metadata)
        failure = self._agree(failure)
        if failure is not None:
            if self.ctx.rank == 0:
                shutil.rmtree(staging, ignore_errors=True)
            previous = read_tracker(directory) if os.path.isdir(directory) else None
            raise CheckpointError(f"saving checkpoint {final} failed: {failure}; the latest checkpoint is still "
                                  f"{'iteration ' + str(previous) if previous is not None else 'none'}")
        return final

    def _on_every_rank(self, step) -> Optional[str]:
        """Run `step` on this rank; the first failure of any rank, the same on every rank."""
        try:
            step()
            failure = None
        except (OSError, RuntimeError) as e:
            failure = f"rank {self.ctx.rank}: {type(e).__name__}: {e}"
            if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) or "unexpected pos" in str(e):
                failure += " (is the file system full?)"  # torch.save reports a short write so
        return self._agree(failure)

    def _agree(self, failure: Optional[str]) -> Optional[str]:
        failures = [None] * dist.get_world_size()
        dist.all_gather_object(failures, failure)
        return next((f for f in failures if f is not None), None)

    def _prepare(self, directory: str, staging: str) -> None:
        if self.ctx.rank == 0:
            os.makedirs(directory, exist_ok=True)
            shutil.rmtree(staging, ignore_errors=True)  # left by a crashed save

    def _write(self, directory: str, name: str, staging: str, client_state: Dict[str, Any]) -> None:
        dist.barrier()
        self.engine.save_checkpoint(directory, tag=name + PARTIAL_SUFFIX, client_state=client_state,
                                    save_latest=False)
        if not self.save_rng:
            return
        rng_dir = os.path.join(staging, "rng")
        os.makedirs(rng_dir, exist_ok=True)
        with atomic_open(os.path.join(rng_dir, f"rank_{self.ctx.rank:05d}.pt"), "wb") as f:
            torch.save(rng_state(), f)

    def _publish(self, directory: str, staging: str, final: str, iteration: int,
                 metadata: Dict[str, Any]) -> Optional[str]:
        """Rank 0, once every rank has written: make the checkpoint durable, then visible."""
        try:
            write_json(os.path.join(staging, "metadata.json"), metadata)
            fsync_tree(staging)  # DeepSpeed's files too: they must be on disk before the rename
            if os.path.exists(final):  # saving an iteration again: replace it only when complete
                old = final + ".old"
                shutil.rmtree(old, ignore_errors=True)
                os.replace(final, old)
                os.replace(staging, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, final)
            write_text(os.path.join(directory, TRACKER), f"{iteration}\n")
        except OSError as e:
            return f"rank 0: {type(e).__name__}: {e}"
        return None

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

    def layout_mismatch(self, metadata: Dict[str, Any], layout: Layout, loading_optimizer: bool) -> Optional[str]:
        """Why DeepSpeed's own loader cannot read this checkpoint under `layout`; None if it can."""
        saved, now, iteration = metadata["layout"], layout_dict(layout), metadata["iteration"]
        if (saved["tp"], saved["pp"]) != (now["tp"], now["pp"]):
            return (f"checkpoint at iteration {iteration} was saved with layout {describe_layout(saved)}; this run "
                    f"uses {describe_layout(now)}. Tensor- and pipeline-parallel sizes must match, or add --reshard "
                    f"to convert the checkpoint to this layout.")
        if not loading_optimizer:
            return None
        sharded = self.optimizer_sharded_over_dp()
        if saved["dp"] != now["dp"] and sharded:
            return (f"checkpoint at iteration {iteration} was saved with {describe_layout(saved)}; this run uses "
                    f"{describe_layout(now)}. {sharded} optimizer state is saved in one shard per data-parallel "
                    f"rank and needs the same data-parallel size (or --reshard, or --no-load-optim).")
        saved_stage, stage = metadata.get("zero_stage"), self.engine.zero_optimization_stage()
        if saved_stage is not None and saved_stage != stage:
            return (f"checkpoint at iteration {iteration} was saved with ZeRO-{saved_stage}; this run uses "
                    f"ZeRO-{stage}. Add --reshard to convert its optimizer state.")
        return None

    def optimizer_sharded_over_dp(self) -> Optional[str]:
        """What shards this run's optimizer state over data-parallel ranks, if anything: ZeRO,
        or DeepSpeed's bf16 optimizer (bf16 with ZeRO-1 or pipeline parallelism), which
        partitions its fp32 master weights over data-parallel ranks the same way."""
        from deepspeed.runtime.bf16_optimizer import BF16_Optimizer

        if isinstance(self.engine.optimizer, BF16_Optimizer):
            return "DeepSpeed's bf16"
        if self.engine.zero_optimization_stage() > 0:
            return f"ZeRO-{self.engine.zero_optimization_stage()}"
        return None

    def load(self, directory: str, load_optimizer: bool, load_rng: bool, module_only: bool = False) -> Dict[str, Any]:
        """Model, optimizer (unless not wanted), DeepSpeed's own learning-rate scheduler when
        the run uses one (a `scheduler` section in --deepspeed_config; the built-in schedule
        travels in the client state), and this rank's RNG states. RNG states exist per rank:
        when the number of ranks changed they cannot follow, and every generator is seeded
        from --seed and the iteration instead (the caller's `seed_fallback`). `module_only`: the
        model's weights alone (--finetune): DeepSpeed keeps its step counters at zero."""
        iteration = read_tracker(directory)
        name = checkpoint_name(iteration)
        check_checkpoint_files(directory, iteration)
        path, client_state = self.engine.load_checkpoint(
            directory, tag=name, load_optimizer_states=load_optimizer,
            load_lr_scheduler_states=self.engine.lr_scheduler is not None and not module_only,
            load_module_strict=True, load_module_only=module_only,
        )
        if path is None:
            raise CheckpointError(f"DeepSpeed could not load {os.path.join(directory, name)}")
        rng_file = os.path.join(directory, name, "rng", f"rank_{self.ctx.rank:05d}.pt")
        self.rng_restored = load_rng and os.path.exists(rng_file) and \
            len(os.listdir(os.path.dirname(rng_file))) == dist.get_world_size()
        if self.rng_restored:
            self.rng_restored = set_rng_state(torch.load(rng_file, weights_only=False))
        return client_state
