"""What a run saves and how it comes back: the run's own state around the Checkpointer's files.

    save:     the engine's files (training/checkpointing.py), plus the iteration, the blend's data
              position, the mixing state, the schedule, DGA's probe positions and metadata.json
    resume:   the same layout: DeepSpeed loads its files, then every part its own state;
              another layout (--reshard): through the layout-free state of training/reshard.py
    finetune: the model's weights alone (--finetune); training starts at iteration 0
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

import torch.distributed as dist

import megatron_dga
from megatron_dga.config import CheckpointConfig, ModelConfig
from megatron_dga.model.transformer_config import layer_implementation
from megatron_dga.parallel.initialize import ParallelContext, seed_everything
from megatron_dga.parallel.layout import LayoutError
from megatron_dga.training.checkpointing import (Checkpointer, CheckpointError, check_same_layers, checkpoint_name,
                                                 describe_layout, layout_dict, model_shape_mismatch, rng_device)
from megatron_dga.training.engine import TrainingEngine
from megatron_dga.training.export import sharding_map
from megatron_dga.training.reshard import load_into_engine, optimizer_parameter_names, read_training_state


class RunCheckpoints:
    def __init__(self, checkpoint: CheckpointConfig, model: ModelConfig, ctx: ParallelContext, engine: TrainingEngine,
                 parts: Dict[str, Any], described: Dict[str, Any], seed: int, fp16: bool):
        """`parts`: name -> object with state_dict()/load_state_dict() (the blend, the mixing
        algorithm, ...), or None where this run has none. `described`: what metadata.json and
        the client state say of the run (vocabularies, tokenizer, domains, mixing, arguments)."""
        self.config, self.model, self.ctx, self.engine = checkpoint, model, ctx, engine
        self.parts, self.described, self.seed, self.fp16 = parts, described, seed, fp16
        self.files = Checkpointer(ctx, engine.engine, save_rng=not checkpoint.no_save_rng)

    # ---- save ----------------------------------------------------------------------------
    def save(self, iteration: int, consumed_samples: int) -> str:
        metadata = {
            "sharding": self._sharding(),
            "padded_vocab_size": self.described["padded_vocab_size"],
            "vocab_size": self.described["vocab_size"],
            "tokenizer": self.described["tokenizer"],
            "model": dataclasses.asdict(self.model),
            "iteration": iteration,
            "consumed_samples": consumed_samples,
            "layout": layout_dict(self.ctx.layout),
            "zero_stage": self.engine.engine.zero_optimization_stage(),
            "domains": self.described["domains"],
            "mixing": self.described["mixing"],
            "transformer_impl": layer_implementation(self.model),
            "rng_device": rng_device(),
            "version": megatron_dga.__version__,
        }
        return self.files.save(self.config.save, iteration, self._client_state(iteration, consumed_samples), metadata)

    def _client_state(self, iteration: int, consumed_samples: int) -> Dict:
        module = self.engine.module
        return {
            "iteration": iteration,
            "consumed_samples": consumed_samples,
            **{name: part.state_dict() if part is not None else None for name, part in self.parts.items()},
            "domains": self.described["domains"],
            "config": self.described["config"],
            # What --reshard needs to read this rank's files under another layout.
            "parallel_ranks": {"tp": self.ctx.tp_rank, "pp": self.ctx.pp_rank, "dp": self.ctx.dp_rank},
            "parameter_shapes": {n: list(p.shape) for n, p in module.named_parameters()},
            "optimizer_parameters": optimizer_parameter_names(self.engine.engine),
        }

    def _sharding(self) -> Dict[str, list]:
        """How every tensor-parallel parameter of the whole model is split (gathered from all
        pipeline stages), so a checkpoint can be merged into one state dict later."""
        maps = [None] * self.ctx.layout.world_size
        dist.all_gather_object(maps, sharding_map(self.engine.module))
        return {name: split for m in maps for name, split in m.items()}

    # ---- resume --------------------------------------------------------------------------
    def resume(self, directory: str) -> Optional[int]:
        """Load the newest checkpoint in `directory` into the engine and the parts; the
        iteration it was saved at, or None when there is none (training starts from scratch)."""
        ck = self.config
        metadata = self.files.read_metadata(directory)
        if metadata is None:
            if self.ctx.rank == 0:
                print(f"no checkpoint in {directory} ({directory}/latest_checkpointed_iteration.txt "
                      f"is missing): training from scratch", flush=True)
            return None
        if ck.finetune:
            return self._load_weights(directory, metadata)
        self._check_same_run(metadata, directory)
        mismatch = self.files.layout_mismatch(metadata, self.ctx.layout, not ck.no_load_optim)
        if mismatch is not None and not ck.reshard:
            raise CheckpointError(mismatch)
        resharding = mismatch is not None
        if resharding:
            state = self._reshard(directory, metadata)
        else:
            state = self.files.load(directory, load_optimizer=not ck.no_load_optim, load_rng=not ck.no_load_rng)
        iteration = int(state["iteration"])
        if not ck.no_load_rng and (resharding or not self.files.rng_restored):
            # Another layout (per-rank RNG states cannot follow the ranks), or another kind of
            # device (CPU and CUDA generator states do not convert).
            seed_everything(self.seed + iteration + 100 * self.ctx.pp_rank, self.ctx.tp_rank)
            saved = os.path.isdir(os.path.join(directory, checkpoint_name(iteration), "rng"))
            why = (f"checkpoint RNG states are for {metadata['layout']} on {metadata.get('rng_device', 'cpu')}, not "
                   f"this run's layout or device" if saved else "the checkpoint holds no RNG states (--no-save-rng)")
            if self.ctx.rank == 0:
                print(f"{why}: generators seeded from --seed and the iteration", flush=True)
        for name, part in self.parts.items():
            if part is not None and state.get(name) is not None:
                part.load_state_dict(state[name])
        if self.ctx.rank == 0:
            print(f"resumed from {directory} at iteration {iteration}", flush=True)
        return iteration

    def _load_weights(self, directory: str, metadata: Dict) -> None:
        """--finetune: the checkpoint's model weights, and nothing of its training (optimizer,
        schedule, RNG, data position, mixing state); the run starts at iteration 0, on any
        domains. Another layout needs --reshard, as for a resume."""
        self._check_same_model(metadata, directory)
        mismatch = self.files.layout_mismatch(metadata, self.ctx.layout, loading_optimizer=False)
        if mismatch is not None and not self.config.reshard:
            raise CheckpointError(mismatch)
        if mismatch is not None:
            path = os.path.join(directory, checkpoint_name(metadata["iteration"]))
            load_into_engine(self.engine.engine, read_training_state(path, False), self.ctx.layout.tp,
                             self.ctx.tp_rank, self.described["padded_vocab_size"], False)
        else:
            self.files.load(directory, load_optimizer=False, load_rng=False, module_only=True)
        if self.ctx.rank == 0:
            print(f"--finetune: model weights from {directory} (iteration {metadata['iteration']}); training "
                  f"starts at iteration 0", flush=True)
        return None

    def _check_same_run(self, metadata: Dict, directory: str) -> None:
        """The same domains and the same model: a checkpoint of another run is refused by name."""
        if metadata["domains"] != self.described["domains"]:
            raise LayoutError(f"checkpoint domains {metadata['domains']} differ from this run's "
                              f"{self.described['domains']}")
        self._check_same_model(metadata, directory)

    def _check_same_model(self, metadata: Dict, directory: str) -> None:
        check_same_layers(metadata, layer_implementation(self.model), directory)
        mismatch = model_shape_mismatch(metadata.get("model", {}), dataclasses.asdict(self.model), directory)
        if mismatch is not None:
            raise CheckpointError(mismatch)

    def _reshard(self, directory: str, metadata: Dict) -> Dict:
        """Load a checkpoint of another layout through its layout-free state (training/reshard.py)."""
        if self.fp16:
            raise CheckpointError("--reshard does not convert into an fp16 run (its loss scale has no "
                                  "counterpart in the checkpoint); use --bf16 or fp32")
        path = os.path.join(directory, checkpoint_name(metadata["iteration"]))
        with_optimizer = not self.config.no_load_optim
        state = read_training_state(path, with_optimizer)
        engine = self.engine.engine
        load_into_engine(engine, state, self.ctx.layout.tp, self.ctx.tp_rank, self.described["padded_vocab_size"],
                         with_optimizer)
        engine.global_steps = int(state.client_state["iteration"])
        engine.global_samples = int(state.client_state["consumed_samples"])
        if self.ctx.rank == 0:
            print(f"resharded from {describe_layout(metadata['layout'])} to "
                  f"{describe_layout(layout_dict(self.ctx.layout))}{'' if with_optimizer else ' (model only)'}",
                  flush=True)
        return state.client_state
