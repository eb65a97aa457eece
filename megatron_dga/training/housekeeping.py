"""Work between iterations that some Megatron flags ask for: manual garbage collection
(--manual-gc), releasing cached GPU memory (--empty-unused-memory-level), and a profiled range of
iterations (--profile).
"""

from __future__ import annotations

import gc
import os
from contextlib import contextmanager
from typing import Optional

import torch

from megatron_dga.config import LoggingConfig, TrainingConfig


class Housekeeping:
    def __init__(self, training: TrainingConfig, logging: LoggingConfig, rank: int):
        self.training, self.rank = training, rank
        self.trace_dir = os.path.join(logging.tensorboard_dir or ".", "profile")
        self._profiler: Optional[object] = None
        self.profiling = training.profile and rank in training.profile_ranks
        if training.manual_gc:
            gc.disable()
            gc.collect()

    def before_step(self, iteration: int) -> None:
        """`iteration`: the one about to run (1-based)."""
        if self.profiling and iteration == self.training.profile_step_start:
            self._start_profile()

    def after_step(self, iteration: int) -> None:
        t = self.training
        if t.manual_gc and t.manual_gc_interval and iteration % t.manual_gc_interval == 0:
            gc.collect()
        if t.empty_unused_memory_level >= 1 and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self._profiler is not None and iteration >= t.profile_step_end:
            self._stop_profile()

    @contextmanager
    def around_evaluation(self):
        t = self.training
        if t.manual_gc and t.manual_gc_eval:
            gc.collect()
        yield
        if t.manual_gc and t.manual_gc_eval:
            gc.collect()
        if t.empty_unused_memory_level >= 2 and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _start_profile(self) -> None:
        if self.training.use_pytorch_profiler:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            os.makedirs(self.trace_dir, exist_ok=True)
            self._profiler = torch.profiler.profile(
                activities=activities, record_shapes=True,
                on_trace_ready=torch.profiler.tensorboard_trace_handler(self.trace_dir, worker_name=f"rank{self.rank}"))
            self._profiler.__enter__()
        elif torch.cuda.is_available():
            torch.cuda.cudart().cudaProfilerStart()
            self._profiler = "cuda"
        else:  # the CUDA profiler's range marks nothing on the CPU
            print(f"rank {self.rank}: --profile marks a CUDA profiler range, and there is no GPU here: add "
                  f"--use-pytorch-profiler for a torch.profiler trace", flush=True)
            self.profiling = False

    def _stop_profile(self) -> None:
        if self._profiler == "cuda":
            torch.cuda.cudart().cudaProfilerStop()
        else:
            self._profiler.__exit__(None, None, None)
        self._profiler = None
        self.profiling = False

    def close(self) -> None:
        if self._profiler is not None:
            self._stop_profile()
        if self.training.manual_gc:
            gc.enable()
