"""Entry point: `python -m megatron_dga.pretrain [flags]` or `megatron-dga-pretrain [flags]`.

Launch it with `deepspeed --num_gpus N` (one process per GPU, or N gloo processes on a machine
without CUDA), `deepspeed --hostfile H` for several nodes, or `torchrun`.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Optional, Sequence

from megatron_dga.arguments import parse_args_with_notes
from megatron_dga.training.metrics import print_line


def _quiet_known_warnings() -> None:
    # megatron-core warns at import time that optional accelerated kernels (apex, Transformer
    # Engine) are absent; the fallbacks it names are the ones we intend to use on such machines,
    # and start-up says so once (`what_runs`).
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*not installed.*")
    warnings.filterwarnings("ignore", message=".*Apex is not installed.*")
    # megatron-core 0.16.1's own TransformerConfig defaults trigger its CUDA-graph deprecation note.
    warnings.filterwarnings("ignore", message="full scope is deprecated")
    # DeepSpeed announces its CPU accelerator in every process; `what_runs` says it once.
    logging.getLogger("DeepSpeed").addFilter(lambda record: "Setting accelerator to CPU" not in record.getMessage())


def what_runs() -> str:
    """One start-up line: the accelerator and the optional kernels used or replaced."""
    import importlib.util

    import torch

    te = importlib.util.find_spec("transformer_engine") is not None
    apex = importlib.util.find_spec("apex") is not None
    device = (f"CUDA ({torch.cuda.device_count()} GPU(s) visible), NCCL" if torch.cuda.is_available()
              else "no CUDA: DeepSpeed's CPU accelerator, gloo")
    kernels = (f"Transformer Engine {'installed (opt-in: --transformer-impl transformer_engine)' if te else 'absent'}; "
               f"apex {'installed' if apex else 'absent: torch norms and optimizers'}")
    return f"{device}; megatron-core's local layers; {kernels}"


def main(argv: Optional[Sequence[str]] = None) -> int:
    _quiet_known_warnings()
    config, notes = parse_args_with_notes(argv)
    if int(os.environ.get("RANK", "0")) == 0:
        print_line(what_runs())
        for note in notes:
            print_line(f"note: {note}")

    from megatron_dga.data.domains import DataError
    from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
    from megatron_dga.parallel.layout import LayoutError, resolve_layout
    from megatron_dga.parallel.initialize import world_size_from_env
    from megatron_dga.training.checkpointing import CheckpointError
    from megatron_dga.training.deepspeed_config import apply_user_config, load_user_config
    from megatron_dga.training.stopping import TrainingDivergedError
    from megatron_dga.training.trainer import Trainer
    from megatron_dga.training.watchdog import Watchdog

    # From the start: a rank stuck in start-up (a peer that never comes, a file system that
    # hangs) is ended too, with what it was doing.
    watchdog = Watchdog(int(os.environ.get("RANK", "0")), 60.0 * config.parallel.distributed_timeout_minutes)
    try:
        for warning in apply_user_config(config, load_user_config(config.training.deepspeed_config)):
            if int(os.environ.get("RANK", "0")) == 0:
                print_line(f"warning: {warning}")
        resolve_layout(config, world_size_from_env())  # refuse impossible layouts before any work
        ctx = initialize_parallel(config)
        trainer = Trainer(config, ctx, watchdog)
    except (LayoutError, DataError, CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    try:
        trainer.train()
    except (TrainingDivergedError, DataError) as e:
        return _fail(trainer, 3 if isinstance(e, TrainingDivergedError) else 2, f"error: {e}")
    except Exception as e:  # a collective that timed out or lost a peer, a failed save, ...
        return _fail(trainer, 1, f"rank {trainer.ctx.rank}: {trainer.watchdog.operation} failed: "
                                 f"{type(e).__name__}: {e}")
    trainer.close()
    destroy_parallel()
    return 0


def _fail(trainer, status: int, message: str) -> int:
    """Report and leave at once: tearing the process groups down could wait on the peer that
    failed. The launcher ends the other ranks."""
    print(message, file=sys.stderr, flush=True)
    trainer.close()
    sys.stdout.flush()
    os._exit(status)


if __name__ == "__main__":
    sys.exit(main())
