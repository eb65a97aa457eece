#!/usr/bin/env python
"""Memory per GPU of a run, estimated from its flags before it is launched.

    python tools/estimate_memory.py --world-size 64 <the flags given to megatron_dga.pretrain>

Prints, for the most loaded rank (the first pipeline stage), the parameters, gradients,
optimizer state under the ZeRO stage, activations (with the run's recompute setting, and for
comparison without recompute and with full recompute) and the logits, in GiB; with
`--mixing dga`, what a DGA update adds and the total with DGA on. `--vocab-size`
must be among the flags. The model (megatron_dga/memory_estimate.py) says what it counts and
what it leaves out. `--cpu` estimates a CPU run (fp32 attention scores are kept).
"""

import argparse
import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_dga.arguments import parse_args  # noqa: E402
from megatron_dga.memory_estimate import GIB, NOT_SUMMED, estimate, total, total_with_dga  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-size", type=int, required=True, help="GPUs in the job (nodes x GPUs per node)")
    p.add_argument("--cpu", action="store_true", help="estimate a run on CPU processes")
    a, rest = p.parse_known_args(argv)
    config = parse_args(rest)
    layout = config.parallel.tensor_model_parallel_size * config.parallel.pipeline_model_parallel_size
    if a.world_size % layout:
        print(f"error: --world-size {a.world_size} is not a multiple of TP x PP = {layout}", file=sys.stderr)
        return 2
    try:
        parts = estimate(config, a.world_size, on_gpu=not a.cpu)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"per rank of the first pipeline stage ({parts['parameter count (this rank)'] / 1e9:.3f} B parameters):")
    for name, value in parts.items():
        if name not in NOT_SUMMED:
            print(f"  {name:<12} {value / GIB:8.2f} GiB")
    print(f"  {'total':<12} {total(parts) / GIB:8.2f} GiB (plus 1-3 GiB of CUDA context, NCCL and allocator)")
    if "dga (during an update)" in parts:
        print(f"  {'dga':<12} {parts['dga (during an update)'] / GIB:8.2f} GiB during a DGA update, above the "
              f"{parts['held between steps'] / GIB:.2f} GiB held between steps (none between updates)")
        print(f"  {'total, dga':<12} {total_with_dga(parts) / GIB:8.2f} GiB: the larger of the training step's "
              f"peak and an update's")
    for granularity in (None, "selective", "full"):
        if granularity == config.model.recompute_granularity:
            continue
        other = dataclasses.replace(config, model=dataclasses.replace(config.model, recompute_granularity=granularity))
        print(f"  with --recompute-granularity {granularity or 'none'}: activations "
              f"{estimate(other, a.world_size, on_gpu=not a.cpu)['activations'] / GIB:.2f} GiB")
    if config.parallel.tensor_model_parallel_size > 1:
        sp = not config.parallel.sequence_parallel
        other = dataclasses.replace(config, parallel=dataclasses.replace(config.parallel, sequence_parallel=sp))
        print(f"  {'with' if sp else 'without'} --sequence-parallel: activations "
              f"{estimate(other, a.world_size, on_gpu=not a.cpu)['activations'] / GIB:.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
