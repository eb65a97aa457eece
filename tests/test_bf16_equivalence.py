"""bf16 in every layout: 1 rank, TP=2, PP=2 and DP=2 with ZeRO-1 train the same run in bf16
(DeepSpeed's bf16 optimizer, or ZeRO's, with fp32 master weights) and agree within bf16's
precision: reduction orders differ between layouts, and bf16 keeps 8 bits of mantissa."""

import json

import pytest

from pretrain_helpers import SMALL_MODEL, make_domains, pretrain, read_metrics

LAYOUTS = {
    "single": (1, []),
    "tp2": (2, ["--tensor-model-parallel-size", "2"]),
    "pp2": (2, ["--pipeline-model-parallel-size", "2"]),
    "dp2-zero1": (2, ["--zero-stage", "1"]),
}


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16")
    manifest = make_domains(str(root / "data"))
    out = {}
    for name, (nproc, flags) in LAYOUTS.items():
        metrics = str(root / f"{name}.jsonl")
        pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
                  "--train-iters", "4", "--lr", "1e-3", "--hidden-dropout", "0", "--attention-dropout", "0",
                  "--log-interval", "1", "--eval-interval", "100", "--split", "100,0,0", "--bf16",
                  "--metrics-file", metrics, *flags], nproc=nproc)
        out[name] = [(r["lm_loss"], r["grad_norm"]) for r in read_metrics(metrics)]
    return out


@pytest.mark.parametrize("layout", ["tp2", "pp2", "dp2-zero1"])
def test_bf16_layouts_agree_with_one_rank(series, layout):
    reference = series["single"]
    assert len(reference) == 4 and reference[-1][0] < reference[0][0]
    for (loss, norm), (ref_loss, ref_norm) in zip(series[layout], reference):
        assert loss == pytest.approx(ref_loss, rel=1e-2)
        assert norm == pytest.approx(ref_norm, rel=5e-2)


def test_sequence_parallel_sums_in_bf16_equal_per_parameter_sums(tmp_path):
    """With sequence parallelism in bf16, DeepSpeed's BF16_Optimizer adds each micro batch's
    gradients into fp32 buffers after the backward pass, so the gradients replicated over TP are
    summed in one all-reduce per micro batch; with its `immediate_grad_update` it takes each
    gradient during the backward pass, and they are summed one by one. The same sums: the runs
    (2 micro batches per iteration) agree to float rounding."""
    manifest = make_domains(str(tmp_path / "data"))
    immediate = tmp_path / "immediate.json"
    immediate.write_text(json.dumps({"bf16": {"enabled": True, "immediate_grad_update": True}}))
    runs = {}
    for name, extra in (("bucketed", []), ("per-parameter", ["--deepspeed_config", str(immediate)])):
        metrics = str(tmp_path / f"{name}.jsonl")
        result = pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2",
                           "--global-batch-size", "4", "--train-iters", "3", "--lr", "1e-3", "--hidden-dropout", "0",
                           "--attention-dropout", "0", "--log-interval", "1", "--eval-interval", "100",
                           "--split", "100,0,0", "--bf16", "--tensor-model-parallel-size", "2", "--sequence-parallel",
                           "--metrics-file", metrics, *extra], nproc=2)
        runs[name] = ([line for line in result.stdout.splitlines() if line.startswith("--sequence-parallel:")],
                      [(r["lm_loss"], r["grad_norm"]) for r in read_metrics(metrics)])
    assert "one all-reduce per micro batch" in runs["bucketed"][0][0]
    assert "as autograd computes it" in runs["per-parameter"][0][0]
    assert len(runs["bucketed"][1]) == 3
    for (loss, norm), (ref_loss, ref_norm) in zip(runs["bucketed"][1], runs["per-parameter"][1]):
        assert loss == pytest.approx(ref_loss, rel=1e-5)
        assert norm == pytest.approx(ref_norm, rel=1e-5)
