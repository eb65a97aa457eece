"""Our model's logits, from a checkpoint of any layout, in one process.

    logits_driver.py CHECKPOINT_DIR TOKENS.npy OUT.npy

The checkpoint's shards are merged and loaded into the model built on one rank from the
checkpoint's own model config; OUT.npy gets the logits [batch, seq, vocab] over the unpadded
vocabulary.
"""

import dataclasses
import json
import os
import sys

import numpy as np
import torch

from megatron_dga.config import ModelConfig, PretrainConfig
from megatron_dga.model.gpt import build_model
from megatron_dga.parallel.initialize import destroy_parallel, initialize_parallel
from megatron_dga.training.export import load_full_weights_into, load_merged_state_dict


def main():
    directory, tokens_path, out = sys.argv[1:4]
    with open(os.path.join(directory, "metadata.json")) as f:
        metadata = json.load(f)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    model_config = ModelConfig(**{k: v for k, v in metadata["model"].items() if k in fields})
    model_config.hidden_dropout = model_config.attention_dropout = 0.0
    config = PretrainConfig(model=model_config)
    config.data.data_path = ["unused"]
    config.training.train_iters = 1
    ctx = initialize_parallel(config)
    model = build_model(model_config, metadata["padded_vocab_size"], ctx, False, False, 1)
    load_full_weights_into(model, load_merged_state_dict(directory), 1, 0, directory)
    model.eval()
    tokens = torch.from_numpy(np.load(tokens_path))
    with torch.no_grad():
        logits = model(tokens).transpose(0, 1)[..., : metadata["vocab_size"]]
    np.save(out, logits.double().numpy())
    destroy_parallel()


if __name__ == "__main__":
    main()
