"""Count the host reads of tensors (`item`, `float`, `int`, `bool`, `tolist`) that this
project's code makes in training steps after the first, and write rank 0's counts as JSON.

    host_sync_driver.py OUT.json STEPS [pretrain flags]        STEPS calls of train_step
    host_sync_driver.py OUT.json loop [pretrain flags]         the whole loop, trainer.train()

On a GPU each such read waits for the device to finish everything queued before it. The
first step is not counted: it builds the optimizer's state. Reads made by torch or DeepSpeed
are theirs and not counted (torch's unfused Adam reads its host-side step counter; ZeRO checks
its gradient norm for overflow).
"""

import json
import sys
import traceback

import torch

from megatron_dga.arguments import parse_args
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.training.trainer import Trainer

READS = ("item", "__float__", "__int__", "__bool__", "tolist")


def counting(name, original, counts):
    def read(self, *args, **kwargs):
        stack = traceback.extract_stack()[:-1]
        caller = next(frame for frame in reversed(stack) if "/torch/" not in frame.filename)
        if "/megatron_dga/" in caller.filename:
            where = " <- ".join(f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} {frame.name}"
                                for frame in stack[-3:])
            counts[f"{name} at {where}"] = counts.get(f"{name} at {where}", 0) + 1
        return original(self, *args, **kwargs)
    return read


def main():
    out, steps, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    config = parse_args(argv)
    ctx = initialize_parallel(config)
    trainer = Trainer(config, ctx)
    trainer.train_step()
    counts = {}
    originals = {name: getattr(torch.Tensor, name) for name in READS}
    for name, original in originals.items():
        setattr(torch.Tensor, name, counting(name, original, counts))
    try:
        if steps == "loop":
            trainer.train()
        else:
            for _ in range(int(steps)):
                trainer.train_step()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    if ctx.rank == 0:
        with open(out, "w") as f:
            json.dump(counts, f)
    trainer.close()
    destroy_parallel()


if __name__ == "__main__":
    main()
