"""Where a DGA run's alignment scores come from: decompose them at saved checkpoints.

    python examples/austen/diagnose.py --run W/runs/.../dga/seed1 --iterations 100,300,600 \
        --probe-microbatches 8 --out W/diagnosis/NAME

The run must have saved checkpoints (`run.py --extra "--save DIR/checkpoints --save-interval
100"`). At each iteration the model, Adam's state and the mixing state are loaded on one
process, and for every source the score a_i = <P G_spe, g_i> (the run's --dga-alignment) is
computed from --probe-microbatches micro batches of the source (the run's own probe sequences at
that point, read ahead in its training stream) and split, exactly (the parts add up to the score):
- by parameter group: input word embedding, output layer (the tied embedding's two uses are
  separated by giving the head a copy of the weight), position embedding, attention, MLP, norms;
- by position: tokens that end a document (label = end of document), the first 4 tokens of a
  document, the rest (a source of short documents packs many documents in a sequence);
- by token frequency: the predicted token's rank in the specific set's unigram counts (1-10,
  11-100, 101-1000, beyond);
and the spread of the per-micro-batch scores gives each score's standard error (the probe noise).
Scores are also reported centred on their median across sources: that is what moves the
weights. Writes diagnosis.json and one bar chart per decomposition and iteration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from functools import partial
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from megatron_dga.data.batches import MicroBatch  # noqa: E402

FREQUENCY_BINS = [(0, 10), (10, 100), (100, 1000), (1000, 1 << 30)]
DOCUMENT_START = 4  # tokens counted as the start of a document


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="a run folder of run.py with checkpoints")
    p.add_argument("--iterations", required=True, help="comma-separated checkpoint iterations")
    p.add_argument("--probe-microbatches", type=int, default=8)
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


def pretrain_flags(run: str) -> List[str]:
    """The run's pretrain flags, without its outputs and checkpoints."""
    with open(os.path.join(run, "run.json")) as f:
        command = json.load(f)["command"]
    flags = command[command.index("megatron_dga.pretrain") + 1:]
    dropped = {"--save", "--load", "--save-interval", "--metrics-file", "--tensorboard-dir", "--exit-interval"}
    kept, skip = [], False
    for flag in flags:
        if skip:
            skip = False
            continue
        if flag in dropped:
            skip = True
            continue
        kept.append(flag)
    return kept


def checkpoint_at(run: str, iteration: int, scratch: str) -> str:
    """A folder whose tracker names `iteration` (the run's tracker names its last)."""
    from megatron_dga.training.checkpointing import TRACKER, checkpoint_name

    folder = os.path.join(scratch, f"at{iteration}")
    os.makedirs(folder, exist_ok=True)
    name = checkpoint_name(iteration)
    source = os.path.join(run, "checkpoints", name)
    if not os.path.isdir(source):
        raise SystemExit(f"{source}: no checkpoint at iteration {iteration}")
    if not os.path.exists(os.path.join(folder, name)):
        os.symlink(os.path.abspath(source), os.path.join(folder, name))
    with open(os.path.join(folder, TRACKER), "w") as f:
        f.write(f"{iteration}\n")
    return folder


def parameter_group(name: str) -> str:
    if "word_embeddings" in name:
        return "input embedding"
    if "position_embeddings" in name:
        return "position embedding"
    if "layernorm" in name or name.split(".")[-2:-1] == ["norm"] or ".norm." in name:
        return "norms"
    if "self_attention" in name:
        return "attention"
    if "mlp" in name:
        return "mlp"
    if "output_layer" in name:
        return "output layer"
    return "other"


class Decomposer:
    def __init__(self, trainer):
        self.trainer = trainer
        self.module = trainer.engine.module
        self.meter = trainer.alignment
        self.named = [(n, p) for n, p in self.module.named_parameters() if p.requires_grad]
        self.params = [p for _, p in self.named]
        self.groups = [parameter_group(n) for n, _ in self.named]
        self.eod = trainer.tokenizer.eod
        self.head_weight = self._split_tied_head()

    def _split_tied_head(self):
        """Give the tied LM head its own copy of the word embedding, so that the input and
        output uses of the weight get separate gradients (which sum to the tied one)."""
        funcs = self.module._forward_funcs
        last = funcs[-1]
        if not isinstance(last, partial):
            return None  # an untied head: its own parameters
        embedding = last.args[0]
        weight = embedding.embedding.word_embeddings.weight
        copy = torch.nn.Parameter(weight.detach().clone())

        def head(hidden):
            return F.linear(hidden, copy)
        funcs[-1] = head
        self._tied_index = next(i for i, p in enumerate(self.params) if p is weight)
        return copy

    def _dots(self, spe: torch.Tensor, mb: MicroBatch, weight: float) -> Dict[str, float]:
        """weight x <spe, gradient of the micro batch's loss>, by parameter group."""
        layout = self.meter.layout
        wrt = self.params + ([self.head_weight] if self.head_weight is not None else [])
        loss = self.module(mb.tokens, mb.labels, mb.loss_mask)
        grads = torch.autograd.grad(loss, wrt, allow_unused=True)
        parts: Dict[str, float] = {}
        for index, g in enumerate(grads[: len(self.params)]):
            if g is not None:
                value = float(torch.dot(layout.view(spe, index), g.reshape(-1).double())) * weight
                parts[self.groups[index]] = parts.get(self.groups[index], 0.0) + value
        if self.head_weight is not None and grads[-1] is not None:
            view = layout.view(spe, self._tied_index)
            parts["output layer"] = float(torch.dot(view, grads[-1].reshape(-1).double())) * weight
        return parts

    def categories(self, mb: MicroBatch, frequency_rank: np.ndarray) -> Dict[str, torch.Tensor]:
        """Loss masks of each position and frequency category (within the micro batch's mask)."""
        tokens, labels, mask = mb.tokens, mb.labels, mb.loss_mask
        ends = (labels == self.eod)
        since_start = torch.full(tokens.shape, 10 ** 6, dtype=torch.long)
        for b in range(tokens.shape[0]):
            last = -10 ** 6
            for t in range(tokens.shape[1]):
                if int(tokens[b, t]) == self.eod:
                    last = t
                since_start[b, t] = t - last  # 1 for the first token of a document
        starts = (since_start <= DOCUMENT_START) & ~ends
        rest = ~(ends | starts)
        out = {"position: end of document": ends, f"position: first {DOCUMENT_START} tokens of a document": starts,
               "position: rest": rest}
        ranks = torch.from_numpy(frequency_rank)[labels]
        for lo, hi in FREQUENCY_BINS:
            name = f"frequency rank {lo + 1}-{hi}" if hi < 1 << 30 else f"frequency rank > {lo}"
            out[name] = (ranks >= lo) & (ranks < hi)
        return {name: (m.float() * mask) for name, m in out.items()}

    def source_scores(self, spe, micro_batches, frequency_rank):
        """Per micro batch: the score by parameter group, and the score of each category's
        share of the loss (mask_c over the whole mask: the parts add up to the score)."""
        per_micro = []
        for mb in micro_batches:
            entry = {"groups": self._dots(spe, mb, 1.0), "positions": {}, "frequencies": {}, "token_share": {}}
            total = float(mb.loss_mask.sum())
            for name, mask in self.categories(mb, frequency_rank).items():
                key = "positions" if name.startswith("position") else "frequencies"
                count = float(mask.sum())
                entry["token_share"][name] = count / total
                if count == 0:
                    entry[key][name] = 0.0
                    continue
                parts = self._dots(spe, MicroBatch(mb.tokens, mb.labels, mask), count / total)
                entry[key][name] = sum(parts.values())
            per_micro.append(entry)
        return per_micro


def specific_frequency_rank(trainer, vocab: int) -> np.ndarray:
    """Each token's rank in the specific set's unigram counts (0: the most frequent)."""
    specific = trainer.specific_train
    dataset = getattr(specific, "stream", specific).dataset
    counts = np.zeros(vocab, dtype=np.int64)
    for i in range(len(dataset)):
        ids = dataset.get(i)
        counts += np.bincount(ids, minlength=vocab)[:vocab]
    order = np.argsort(-counts, kind="stable")
    rank = np.empty(vocab, dtype=np.int64)
    rank[order] = np.arange(vocab)
    return rank


def summarise(per_micro: List[Dict]) -> Dict:
    def mean_of(key):
        names = per_micro[0][key].keys()
        return {n: float(np.mean([m[key].get(n, 0.0) for m in per_micro])) for n in names}
    scores = [sum(m["groups"].values()) for m in per_micro]
    return {"score": float(np.mean(scores)),
            "stderr": float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else None,
            "groups": mean_of("groups"), "positions": mean_of("positions"), "frequencies": mean_of("frequencies"),
            "token_share": mean_of("token_share")}


def diagnose_at(a, iteration: int, scratch: str) -> Dict:
    from megatron_dga.arguments import parse_args as pretrain_parse
    from megatron_dga.parallel.initialize import initialize_parallel
    from megatron_dga.training.trainer import Trainer

    flags = pretrain_flags(a.run) + ["--load", checkpoint_at(a.run, iteration, scratch),
                                     "--dga-probe-microbatches", str(a.probe_microbatches)]
    config = pretrain_parse(flags)
    ctx = initialize_parallel(config)
    trainer = Trainer(config, ctx)
    rank = specific_frequency_rank(trainer, trainer.vocab_size)
    probes = trainer.alignment.probes
    probes.begin_update(trainer._domain_draws())
    trainer.engine.module.eval()
    spe, _ = trainer.alignment.specific_gradient()  # P G, before the head is given its own weight
    decomposer = Decomposer(trainer)
    result = {"iteration": iteration, "weights": dict(zip(trainer.domain_names, map(float, trainer.mixing.weights()))),
              "sources": {}}
    for j, name in enumerate(trainer.mixing.source_names):
        micro_batches = probes.source_microbatches(j)
        result["sources"][name] = summarise(decomposer.source_scores(spe, micro_batches, rank))
        print(f"iteration {iteration}: {name} score {result['sources'][name]['score']:.4g}", flush=True)
    probes.end_update()
    trainer.close()
    from megatron_dga.parallel.initialize import destroy_parallel
    destroy_parallel()
    return result


def plot(result: Dict, key: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sources = list(result["sources"])
    scores = np.array([result["sources"][s]["score"] for s in sources])
    median = np.median(scores)
    # The median source(s): the centred parts are each source's minus theirs, so they add up
    # to the centred score.
    order = np.argsort(scores)
    middle = [sources[i] for i in order[(len(order) - 1) // 2: len(order) // 2 + 1]]
    parts = list(result["sources"][sources[0]][key])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for ax, centred in zip(axes, (False, True)):
        bottom_pos = np.zeros(len(sources))
        bottom_neg = np.zeros(len(sources))
        for part in parts:
            values = np.array([result["sources"][s][key][part] for s in sources])
            if centred:
                values = values - np.mean([result["sources"][m][key][part] for m in middle])
            bottom = np.where(values >= 0, bottom_pos, bottom_neg)
            ax.bar(sources, values, bottom=bottom, label=part)
            bottom_pos += np.maximum(values, 0)
            bottom_neg += np.minimum(values, 0)
        shown = scores - median if centred else scores
        errors = [result["sources"][s]["stderr"] or 0.0 for s in sources]
        ax.errorbar(sources, shown, yerr=errors, fmt="k_", markersize=14, capsize=4, label="score ± stderr")
        ax.set_title(("centred on the median source (what moves the weights)" if centred else "score") +
                     f", iteration {result['iteration']}")
        ax.tick_params(axis="x", rotation=30)
        ax.axhline(0, color="grey", linewidth=0.5)
    axes[1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    a = parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    results = []
    scratch = tempfile.mkdtemp()
    try:
        for iteration in [int(i) for i in a.iterations.split(",")]:
            result = diagnose_at(a, iteration, scratch)
            results.append(result)
            for key in ("groups", "positions", "frequencies"):
                plot(result, key, os.path.join(a.out, f"{key}-{iteration}.png"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    with open(os.path.join(a.out, "diagnosis.json"), "w") as f:
        json.dump({"run": a.run, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
