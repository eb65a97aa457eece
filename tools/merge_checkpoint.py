#!/usr/bin/env python
"""Merge a checkpoint's tensor- and pipeline-parallel shards into one state dict.

    python tools/merge_checkpoint.py --load checkpoints/run --output model.pt [--iteration N]

Writes {"model": state dict, "metadata": the checkpoint's metadata.json} with parameters named
as on one rank (`tied_modules.embed.*`, `<layer index>.*`), full size: what a run with
TP = PP = 1 holds, whatever layout saved it. The vocabulary stays padded (see
"padded_vocab_size" in the metadata).
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from megatron_dga.files import atomic_open  # noqa: E402
from megatron_dga.training.checkpointing import CheckpointError  # noqa: E402
from megatron_dga.training.export import checkpoint_dir, load_merged_state_dict  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", required=True, help="checkpoint folder given to --save")
    p.add_argument("--iteration", type=int, help="which checkpoint (default: the latest)")
    p.add_argument("--output", required=True, help="file to write (torch.save)")
    a = p.parse_args(argv)
    try:
        directory = checkpoint_dir(a.load, a.iteration)
        model = load_merged_state_dict(directory)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with open(os.path.join(directory, "metadata.json")) as f:
        metadata = json.load(f)
    with atomic_open(a.output, "wb") as f:
        torch.save({"model": model, "metadata": metadata}, f)
    print(f"{a.output}: {len(model)} tensors, {sum(t.numel() for t in model.values()):,} parameters "
          f"from {directory} (layout TP={metadata['layout']['tp']} PP={metadata['layout']['pp']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
