"""Process groups for TP x PP x DP: torch.distributed, megatron-core and DeepSpeed agreeing.

Rank order is megatron-core's default (tensor-parallel fastest, then data, then pipeline),
which is also the order of DeepSpeed's `PipeModelDataParallelTopology` (axes pipe, data,
model); `initialize_parallel` checks that both give every rank the same coordinates.
"""

from __future__ import annotations

import importlib
import os
import random
import socket
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from megatron_dga.config import PretrainConfig
from megatron_dga.parallel.cpu_shims import apply_cpu_shims, model_parallel_manual_seed
from megatron_dga.parallel.layout import Layout, resolve_layout


@dataclass
class ParallelContext:
    """Where this process sits in the TP x PP x DP grid, and its groups."""

    layout: Layout
    rank: int
    local_rank: int
    tp_rank: int
    pp_rank: int
    dp_rank: int
    device: torch.device
    topology: object  # deepspeed PipeModelDataParallelTopology
    tp_group: object
    pp_group: object
    dp_group: object

    @property
    def is_first_stage(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last_stage(self) -> bool:
        return self.pp_rank == self.layout.pp - 1

    @property
    def is_logging_rank(self) -> bool:
        """One rank writes logs and TensorBoard: the last one, which sits on the last
        pipeline stage where the loss is computed (as in Megatron)."""
        return self.rank == self.layout.world_size - 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_single_process_env() -> None:
    """Let `python -m megatron_dga.pretrain` run without a launcher as a world of one."""
    if os.environ.get("WORLD_SIZE", "1") != "1":
        return  # a launcher set up the world
    # WORLD_SIZE=1 alone (left over in a shell or job environment) is also a world of one
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1"),
                        ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, value)
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())


def _limit_cpu_threads() -> None:
    """Without CUDA, ranks on one machine share its cores; one full set of threads per rank
    would oversubscribe them. An explicit OMP_NUM_THREADS wins."""
    if torch.cuda.is_available() or "OMP_NUM_THREADS" in os.environ:
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("LOCAL_SIZE", "1")))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))


def seed_everything(seed: int, tp_rank: int) -> None:
    """Python, NumPy, torch and megatron-core's tensor-parallel RNG tracker."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    model_parallel_manual_seed(seed, tp_rank)


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def use_timeout_for_every_group(timeout: timedelta) -> None:
    """Make `timeout` the default of every process group created from now on.

    `torch.distributed.new_group` without a timeout takes the module default (30 minutes), and
    DeepSpeed creates its pipeline and tied-weight groups that way: a rank stuck in one of
    their collectives would hang the job for half an hour whatever --distributed-timeout-minutes
    says. torch reads the default from these two module globals at each call."""
    from torch.distributed import distributed_c10d

    distributed_c10d.default_pg_timeout = timeout
    distributed_c10d.default_pg_nccl_timeout = timeout


def skip_inference_shm_op() -> None:
    """Keep DeepSpeed from JIT-building its shared-memory all-reduce op on the CPU.

    That op serves DeepSpeed inference only (`inference_all_reduce`); training never calls it.
    Building it runs g++ under a torch lock file at every start, and a rank that its launcher
    kills while holding the lock (any failed multi-rank start) leaves the lock behind: every
    later start on the machine then waits on it forever."""
    # `from deepspeed.comm import torch` would give torch itself, which that package imports
    deepspeed_torch_comm = importlib.import_module("deepspeed.comm.torch")
    deepspeed_torch_comm.build_shm_op = lambda: None


def set_nccl_error_handling(environ) -> None:
    """A timed-out or failed NCCL collective raises in the training thread, as gloo's do, so the
    rank exits with our message (rank, iteration, operation) and status 1: mode 2 of PyTorch's
    watchdog aborts the communicators and lets the next wait raise, where mode 1 would end the
    process from NCCL's watchdog thread with its own message. Blocking waits, which would also
    raise, are left off: they would make every collective wait on the host. A value the user set
    is kept."""
    environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")


def gpu_index(local_rank: int, visible: int) -> int:
    """The GPU of this process: the LOCAL_RANK-th of the node's, or the one GPU it sees where each
    task is given only its own (Slurm's --gpus-per-task, CUDA_VISIBLE_DEVICES set per process)."""
    if visible == 1:
        return 0
    if local_rank >= visible:
        raise RuntimeError(f"LOCAL_RANK {local_rank} but only {visible} GPUs are visible to this process")
    return local_rank


def initialize_parallel(config: PretrainConfig) -> ParallelContext:
    """Start torch.distributed, build megatron-core's groups and the matching DeepSpeed
    topology, and seed every generator. The layout is validated before anything starts."""
    layout = resolve_layout(config, world_size_from_env())
    _default_single_process_env()
    _limit_cpu_threads()

    import deepspeed
    from deepspeed.runtime.pipe.topology import PipeModelDataParallelTopology
    from megatron.core import parallel_state as ps

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        index = gpu_index(local_rank, torch.cuda.device_count())
        torch.cuda.set_device(index)
        device = torch.device("cuda", index)
    else:
        device = torch.device("cpu")
    backend = config.parallel.distributed_backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if backend == "nccl":
        set_nccl_error_handling(os.environ)
    timeout = timedelta(minutes=config.parallel.distributed_timeout_minutes)
    use_timeout_for_every_group(timeout)
    if not dist.is_initialized():
        if not torch.cuda.is_available():
            skip_inference_shm_op()
        deepspeed.init_distributed(dist_backend=backend, timeout=timeout, verbose=False)
    if dist.get_world_size() != layout.world_size:
        layout = resolve_layout(config, dist.get_world_size())

    apply_cpu_shims()
    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    ps.initialize_model_parallel(
        tensor_model_parallel_size=layout.tp, pipeline_model_parallel_size=layout.pp,
        distributed_timeout_minutes=config.parallel.distributed_timeout_minutes,
        # megatron-core's extra gloo groups (for its distributed optimizer's checkpoints) are not
        # used here, and on NCCL runs they fail on hosts whose name resolves to 127.0.1.1.
        create_gloo_process_groups=False,
    )
    topology = PipeModelDataParallelTopology(num_pp=layout.pp, num_mp=layout.tp, num_dp=layout.dp)
    rank = dist.get_rank()
    coord = topology.get_coord(rank)
    ctx = ParallelContext(
        layout=layout,
        rank=rank,
        local_rank=local_rank,
        tp_rank=ps.get_tensor_model_parallel_rank(),
        pp_rank=ps.get_pipeline_model_parallel_rank(),
        dp_rank=ps.get_data_parallel_rank(),
        device=device,
        topology=topology,
        tp_group=ps.get_tensor_model_parallel_group(),
        pp_group=ps.get_pipeline_model_parallel_group(),
        dp_group=ps.get_data_parallel_group(),
    )
    if (coord.pipe, coord.data, coord.model) != (ctx.pp_rank, ctx.dp_rank, ctx.tp_rank):
        raise RuntimeError(
            f"rank {rank}: megatron-core places it at (pp={ctx.pp_rank}, dp={ctx.dp_rank}, "
            f"tp={ctx.tp_rank}) but DeepSpeed's topology at {coord}"
        )
    # Megatron's convention: pipeline stages get distinct seeds, tensor-parallel ranks get
    # distinct model-parallel RNG states (for dropout inside TP regions).
    seed_everything(config.training.seed + 100 * ctx.pp_rank, ctx.tp_rank)
    return ctx


def destroy_parallel() -> None:
    from megatron.core import parallel_state as ps

    if ps.model_parallel_is_initialized():
        ps.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()
