"""The same run in every parallel layout: same losses, same parameters after the steps.

Single rank, TP=2 (with and without sequence parallelism), PP=2 (ZeRO 0 and 1), DP=2 with
ZeRO 0, 1 and 2, and the 3-D layouts on 4 ranks (TP2 x PP2 with and without sequence
parallelism, TP2 x DP2, TP2 x DP2 with sequence parallelism under ZeRO 1 and 2, PP2 x DP2
with ZeRO-1) train 5 iterations on the same data and
seed in fp32; their per-iteration losses and gradient norms (the clipping reduction over TP, PP
and DP) agree to 1e-4 (relative) and the merged parameters of their final checkpoints agree.
"""

import os
import subprocess
import sys

import pytest
import torch

from megatron_dga.training.export import latest_checkpoint_dir, load_merged_state_dict
from pretrain_helpers import SMALL_MODEL, losses_by_iteration, make_domains, pretrain, read_metrics

LAYOUTS = {
    "single": (1, []),
    "tp2": (2, ["--tensor-model-parallel-size", "2"]),
    "tp2-sp": (2, ["--tensor-model-parallel-size", "2", "--sequence-parallel"]),
    "pp2": (2, ["--pipeline-model-parallel-size", "2"]),
    "pp2-zero1": (2, ["--pipeline-model-parallel-size", "2", "--zero-stage", "1"]),
    "dp2-zero0": (2, ["--zero-stage", "0"]),
    "dp2-zero1": (2, ["--zero-stage", "1"]),
    "dp2-zero2": (2, ["--zero-stage", "2"]),
    "tp2-pp2": (4, ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2"]),
    "tp2-dp2": (4, ["--tensor-model-parallel-size", "2"]),
    "pp2-dp2-zero1": (4, ["--pipeline-model-parallel-size", "2", "--zero-stage", "1"]),
    "tp2-pp2-sp": (4, ["--tensor-model-parallel-size", "2", "--pipeline-model-parallel-size", "2",
                       "--sequence-parallel"]),
    # ZeRO-1 takes gradients after the backward pass, ZeRO-2 during it: the sequence-parallel
    # gradient sums are bucketed in the first and per parameter in the second.
    "tp2-dp2-sp-zero1": (4, ["--tensor-model-parallel-size", "2", "--sequence-parallel", "--zero-stage", "1"]),
    "tp2-dp2-sp-zero2": (4, ["--tensor-model-parallel-size", "2", "--sequence-parallel", "--zero-stage", "2"]),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("equivalence")
    manifest = make_domains(str(root / "data"))
    results = {}
    for name, (nproc, layout_args) in LAYOUTS.items():
        run_dir = root / name
        args = [
            "--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "8",
            "--train-iters", "5", "--lr", "1e-3", "--lr-warmup-iters", "1", "--lr-decay-style", "cosine",
            "--hidden-dropout", "0", "--attention-dropout", "0", "--log-interval", "1", "--eval-interval", "5",
            "--eval-iters", "1", "--split", "90,10,0", "--metrics-file", str(run_dir / "metrics.jsonl"),
            "--save", str(run_dir / "checkpoints"), *layout_args,
        ]
        result = pretrain(args, nproc=nproc)
        (run_dir / "stdout.txt").write_text(result.stdout)
        results[name] = run_dir
    return results


def test_losses_agree_across_layouts(runs):
    reference = losses_by_iteration(os.path.join(runs["single"], "metrics.jsonl"))
    assert sorted(reference) == [1, 2, 3, 4, 5]
    for name, run_dir in runs.items():
        losses = losses_by_iteration(os.path.join(run_dir, "metrics.jsonl"))
        assert sorted(losses) == sorted(reference), name
        for iteration, loss in reference.items():
            assert abs(losses[iteration] - loss) <= 1e-4 * abs(loss), (name, iteration, losses[iteration], loss)
    # The model learns something in 5 steps: the comparison is not between constants.
    assert reference[5] < reference[1]


def test_gradient_norms_agree_across_layouts(runs):
    def norms(run_dir):
        return {r["iteration"]: r["grad_norm"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"))}

    reference = norms(runs["single"])
    assert len(reference) == 5 and all(value > 0 for value in reference.values())
    for name, run_dir in runs.items():
        for iteration, norm in norms(run_dir).items():
            assert abs(norm - reference[iteration]) <= 1e-4 * reference[iteration], (name, iteration, norm)


def test_parameters_agree_across_layouts(runs):
    reference = load_merged_state_dict(latest_checkpoint_dir(str(runs["single"] / "checkpoints")))
    assert "tied_modules.embed.embedding.word_embeddings.weight" in reference
    # atol 1e-5: Adam divides by sqrt(v), so an element whose gradient is near zero turns
    # float reduction-order differences into update differences of 1e-6 (seen on a bias).
    for name, run_dir in runs.items():
        params = load_merged_state_dict(latest_checkpoint_dir(str(run_dir / "checkpoints")))
        assert sorted(params) == sorted(reference), name
        for key, value in reference.items():
            torch.testing.assert_close(params[key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{name} {key}: {m}")


def test_sequence_parallel_gradients_are_summed_once_per_step_where_deepspeed_allows(runs):
    """Megatron sums the gradients of the parameters replicated over TP under sequence
    parallelism in one all-reduce after the backward pass. Where DeepSpeed takes gradients only
    at its own reduction (ZeRO 0 and 1 here, the pipeline engine) they are summed that way; where
    it takes each as autograd computes it (ZeRO-2), each is summed then. The losses, norms and
    parameters above agree with the single rank either way."""
    def mode(name):
        lines = [line for line in (runs[name] / "stdout.txt").read_text().splitlines()
                 if line.startswith("--sequence-parallel:")]
        assert len(lines) == 1, (name, lines)
        return lines[0]

    for name in ("tp2-sp", "tp2-pp2-sp", "tp2-dp2-sp-zero1"):
        assert "one all-reduce per iteration" in mode(name), (name, mode(name))
    assert "as autograd computes it" in mode("tp2-dp2-sp-zero2")
    assert "--sequence-parallel:" not in (runs["tp2"] / "stdout.txt").read_text()


def test_merge_tool_writes_one_full_state_dict(runs, tmp_path):
    out = tmp_path / "model.pt"
    result = subprocess.run([sys.executable, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools",
                                                           "merge_checkpoint.py"),
                             "--load", str(runs["tp2"] / "checkpoints"), "--output", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    merged = torch.load(out, weights_only=False)
    reference = load_merged_state_dict(latest_checkpoint_dir(str(runs["single"] / "checkpoints")))
    assert merged["metadata"]["layout"]["tp"] == 2
    for key, value in reference.items():
        torch.testing.assert_close(merged["model"][key], value, rtol=1e-4, atol=1e-5)


def test_llama_style_variant_agrees_across_layouts(tmp_path):
    """The Llama shape (rotary positions, RMSNorm, SwiGLU, no linear biases, grouped-query
    attention, an untied output layer) with the loss masked at EOD: same losses and gradient
    norms with 1 rank, TP=2 (with and without sequence parallelism) and PP=2."""
    manifest = make_domains(str(tmp_path / "data"))
    series = {}
    layouts = {name: LAYOUTS[name] for name in ("single", "tp2", "tp2-sp", "pp2")}
    for name, (nproc, layout_args) in layouts.items():
        metrics = str(tmp_path / f"{name}.jsonl")
        pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
                  "--train-iters", "3", "--hidden-dropout", "0", "--attention-dropout", "0", "--log-interval", "1",
                  "--eval-interval", "100", "--split", "90,10,0", "--position-embedding-type", "rope",
                  "--normalization", "RMSNorm", "--swiglu", "--disable-bias-linear", "--eod-mask-loss",
                  "--group-query-attention", "--num-query-groups", "2", "--untie-embeddings-and-output-weights",
                  "--metrics-file", metrics, *layout_args], nproc=nproc)
        series[name] = {r["iteration"]: (r["lm_loss"], r["grad_norm"]) for r in read_metrics(metrics)}
    assert len(series["single"]) == 3
    for name in ("tp2", "tp2-sp", "pp2"):
        for iteration, (loss, grad_norm) in series["single"].items():
            assert abs(series[name][iteration][0] - loss) <= 1e-4 * abs(loss), (name, iteration)
            assert abs(series[name][iteration][1] - grad_norm) <= 1e-4 * abs(grad_norm), (name, iteration)
