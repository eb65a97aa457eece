"""Count each rank's reads of training batches, and record the batches it trains on.

    batch_reads_driver.py OUT_PREFIX STEPS [pretrain flags]

Writes OUT_PREFIX-<rank>.json: how many times the rank read micro batches from the domain
files (`TrainBatches.load`), and the token ids of every micro batch its steps received.
"""

import json
import sys

from megatron_dga.arguments import parse_args
from megatron_dga.data.batches import TrainBatches
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.training.engine import TrainingEngine
from megatron_dga.training.trainer import Trainer


def main():
    out, steps, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    reads, received = [0], []
    original_load, original_step = TrainBatches.load, TrainingEngine.train_step

    def counted_load(self, *args, **kwargs):
        reads[0] += 1
        return original_load(self, *args, **kwargs)

    def recorded_step(self, micro_batches):
        received.append([mb.tokens.tolist() for mb in micro_batches])
        return original_step(self, micro_batches)

    TrainBatches.load, TrainingEngine.train_step = counted_load, recorded_step
    config = parse_args(argv)
    ctx = initialize_parallel(config)
    trainer = Trainer(config, ctx)
    for _ in range(steps):
        trainer.train_step()
    trainer.close()
    with open(f"{out}-{ctx.rank}.json", "w") as f:
        json.dump({"reads": reads[0], "tp_rank": ctx.tp_rank, "batches": received}, f)
    destroy_parallel()


if __name__ == "__main__":
    main()
