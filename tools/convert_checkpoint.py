#!/usr/bin/env python
"""Export a checkpoint as a Hugging Face `transformers` model folder.

    python tools/convert_checkpoint.py --load checkpoints/run --output hf/ [--iteration N]

Reads the checkpoint of any layout (its tensor- and pipeline-parallel shards are merged) and
writes OUTPUT/ with model.safetensors, config.json (GPT2LMHeadModel or LlamaForCausalLM) and,
where the run's tokenizer allows it (HuggingFaceTokenizer, GPT2BPETokenizer, TikTokenizer), the
tokenizer: `AutoModelForCausalLM.from_pretrained(OUTPUT)` and `AutoTokenizer.from_pretrained(OUTPUT)`
load it. The padded vocabulary rows are dropped. A run whose shape has no exact transformers
counterpart is refused with the flag that makes it differ. The folder appears only when complete.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron_dga.model.huggingface import ExportError  # noqa: E402
from megatron_dga.training.checkpointing import CheckpointError  # noqa: E402
from megatron_dga.training.export import checkpoint_dir  # noqa: E402
from megatron_dga.training.hf_checkpoint import export_checkpoint  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--load", required=True, help="checkpoint folder given to --save")
    p.add_argument("--iteration", type=int, help="which checkpoint (default: the latest)")
    p.add_argument("--output", required=True, help="folder to write")
    a = p.parse_args(argv)
    try:
        directory = checkpoint_dir(a.load, a.iteration)
        done = export_checkpoint(directory, a.output)
    except (CheckpointError, ExportError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.output}: {done['architecture']} from {directory} (iteration {done['iteration']}); {done['tokenizer']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
