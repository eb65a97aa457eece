"""DGA inside training: it learns the right domain, resumes exactly, and logs its series.
Importance sampling uses the specific set's histogram as its weights."""

import json
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from megatron_dga.mixing.importance import histogram_weights
from megatron_dga.training.checkpointing import read_tracker
from pretrain_helpers import SMALL_MODEL, make_domains, pretrain, read_metrics, synthetic_documents, write_domain


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three domains of distinct token ranges and structure (repeated motifs, arithmetic ramps,
    noise); the specific set is drawn like domain 1, the only one that teaches its structure."""
    root = tmp_path_factory.mktemp("dga-data")
    manifest = make_domains(str(root), docs_per_domain=80, kinds=["motif", "ramp", "noise"])
    rng = np.random.default_rng(5)
    width = 255 // 3
    specific = lambda count: synthetic_documents(rng, (width, 2 * width), count, kind="ramp")  # noqa: E731
    write_domain(str(root / "spec_text_document"), specific(30))
    write_domain(str(root / "specvalid_text_document"), specific(20))
    return {"manifest": manifest, "specific": str(root / "spec_text_document"),
            "specific_valid": str(root / "specvalid_text_document")}


def args_for(data, run_dir, iters, extra=()):
    return ["--domains-manifest", data["manifest"], *SMALL_MODEL, "--micro-batch-size", "4", "--global-batch-size", "8",
            "--train-iters", str(iters), "--lr", "3e-3", "--split", "90,10,0", "--eval-iters", "2",
            "--specific-data-path", data["specific"], "--specific-valid-data-path", data["specific_valid"],
            "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), *extra]


def specific_losses(run_dir):
    return [r["per_set"]["specific"] for r in read_metrics(os.path.join(run_dir, "metrics.jsonl"), "validation")]


def test_dga_prefers_the_specific_domain_and_helps_the_target(tmp_path, data):
    runs = {}
    for mixing in ("uniform", "dga"):
        run_dir = str(tmp_path / mixing)
        pretrain(args_for(data, run_dir, 100, ["--mixing", mixing, "--dga-update-interval", "5", "--log-interval", "10",
                                               "--eval-interval", "20", "--tensorboard-dir", os.path.join(run_dir, "tb")]))
        runs[mixing] = run_dir
    final = read_metrics(os.path.join(runs["dga"], "metrics.jsonl"))[-1]
    weights = final["data_mixture"]
    assert max(weights, key=weights.get) == "dom1" and weights["dom1"] > 0.8, weights
    mean_alignment = {d: np.mean([r["alignment"][d] for r in read_metrics(os.path.join(runs["dga"], "metrics.jsonl"))])
                      for d in ("dom0", "dom1", "dom2")}
    assert max(mean_alignment, key=mean_alignment.get) == "dom1", mean_alignment
    dga_losses, uniform_losses = specific_losses(runs["dga"]), specific_losses(runs["uniform"])
    assert len(dga_losses) == len(uniform_losses) == 5
    # The held-out specific loss falls faster: lower on average over training, and at the end.
    assert np.mean(dga_losses) < np.mean(uniform_losses), (dga_losses, uniform_losses)
    assert dga_losses[-1] < uniform_losses[-1]

    # Monitoring: the DGA series are in TensorBoard and in the metrics file.
    events = EventAccumulator(os.path.join(runs["dga"], "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ["alignment/dom0", "data-mixture/dom1", "domain-epochs/dom2", "domain-tokens/dom1",
                "mixing-time/probe-seconds", "mixing-time/replan-seconds", "lm loss validation/specific"]:
        assert tag in tags, tag
    for key in ["alignment", "data_mixture", "domain_epochs", "domain_tokens", "mixing_time"]:
        assert key in final, key
    assert final["mixing_time"]["probe-seconds"] > 0
    assert sum(final["domain_tokens"].values()) == 100 * 8 * 32


# The paper's plain update, every part spelt out (the framework's defaults add Adam's score and
# the step control).
PAPER = ["--dga-alignment", "raw", "--dga-step-scale", "none", "--dga-step-clip", "0", "--dga-score-ema", "0",
         "--no-dga-scale-by-lr"]
VARIANTS = {"raw": PAPER, "defaults": ["--dga-probe-microbatches", "2", "--dga-lr", "0.5"]}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dga_resume_is_exact(tmp_path, data, variant):
    """2 x T_r + 3 iterations straight equal T_r + 1, stop, resume: losses, weights,
    alignment and samples (tokens drawn per domain) at every iteration. With the default
    update the running statistics (the scale's window, the score average) and Adam's moments
    cross the stop too."""
    t_r = 4
    common = ["--mixing", "dga", "--dga-update-interval", str(t_r), "--dga-lr", "3", "--log-interval", "1",
              "--eval-interval", "100", "--hidden-dropout", "0.1", "--attention-dropout", "0.1", *VARIANTS[variant]]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    checkpoints = os.path.join(resumed, "checkpoints")
    iters = 2 * t_r + 3
    pretrain(args_for(data, straight, iters, common))
    pretrain(args_for(data, resumed, iters, [*common, "--save", checkpoints, "--save-interval", str(t_r + 1),
                                             "--exit-interval", str(t_r + 1)]))
    assert read_tracker(checkpoints) == t_r + 1
    pretrain(args_for(data, resumed, iters, [*common, "--save", checkpoints, "--load", checkpoints]))

    a = read_metrics(os.path.join(straight, "metrics.jsonl"))
    b = read_metrics(os.path.join(resumed, "metrics.jsonl"))
    assert [r["iteration"] for r in b] == list(range(1, iters + 1))
    for x, y in zip(a, b):
        assert y["lm_loss"] == pytest.approx(x["lm_loss"], rel=1e-6), x["iteration"]
        assert y["data_mixture"] == pytest.approx(x["data_mixture"], rel=1e-9), x["iteration"]
        assert y["alignment"] == pytest.approx(x["alignment"], rel=1e-6, nan_ok=True), x["iteration"]
        assert y["dga_step"] == pytest.approx(x["dga_step"], rel=1e-6), x["iteration"]
        assert y["domain_tokens"] == x["domain_tokens"], x["iteration"]
    # The weights did move: the resumed run had updates on both sides of the stop.
    assert a[-1]["dga_updates"]["done"] == 2 and a[-1]["data_mixture"]["dom0"] != pytest.approx(1 / 3)
    if variant != "raw":  # two probe micro batches per source: a standard error for every score
        assert all(np.isfinite(v) and v > 0 for v in a[-1]["alignment_stderr"].values())


def test_default_update_interval_follows_the_probe_budget(tmp_path, data):
    """Without --dga-update-interval, the run updates as often as --dga-probe-budget allows and says so:
    3 sources and the specific set, 1 probe micro batch each, against 2 training micro batches per
    iteration: every 20 iterations at the default 10%, every 10 at 20%."""
    for budget, interval in ((None, 20), ("0.2", 10)):
        run_dir = str(tmp_path / f"budget-{budget}")
        extra = ["--mixing", "dga", "--log-interval", "1", "--eval-interval", "100"]
        result = pretrain(args_for(data, run_dir, 21, [*extra, *(["--dga-probe-budget", budget] if budget else [])]))
        assert f"updates the weights every {interval} iterations" in result.stdout
        records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        done = [r["dga_updates"]["done"] for r in records]
        # An update runs before the iteration its interval divides.
        assert done == [(r["iteration"] - 1) // interval for r in records], done


def test_a_probe_batch_below_one_micro_batch_is_the_same_in_every_layout(tmp_path, data):
    """--dga-probe-batch-size 2 with micro batches of 4: on one rank a probe micro batch of 2
    sequences, on two data-parallel ranks one of 1 sequence each, averaged. The same sequences, so
    the same scores and weights at every iteration."""
    series = {}
    for nproc in (1, 2):
        run_dir = str(tmp_path / f"dp{nproc}")
        pretrain(args_for(data, run_dir, 6, ["--mixing", "dga", "--dga-update-interval", "2", "--dga-lr", "3",
                                             "--dga-probe-batch-size", "2", "--log-interval", "1",
                                             "--eval-interval", "100", "--hidden-dropout", "0",
                                             "--attention-dropout", "0"]), nproc=nproc)
        series[nproc] = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    assert series[1][-1]["dga_updates"]["done"] == 2
    assert series[1][-1]["data_mixture"]["dom0"] != pytest.approx(1 / 3)  # the weights moved
    for x, y in zip(series[1], series[2]):
        assert y["lm_loss"] == pytest.approx(x["lm_loss"], rel=1e-4), x["iteration"]
        assert y["alignment"] == pytest.approx(x["alignment"], rel=1e-3, abs=1e-6, nan_ok=True), x["iteration"]
        assert y["data_mixture"] == pytest.approx(x["data_mixture"], rel=1e-4), x["iteration"]


def straight_and_resumed(tmp_path, data, extra, stop, iters=61):
    """The same DGA run uninterrupted and stopped at iteration `stop` then resumed: (the first's stdout,
    its train records, the resumed run's), after checking that the resumed run is the uninterrupted one:
    losses, weights and scores at every iteration."""
    common = ["--mixing", "dga", *extra, "--log-interval", "1", "--eval-interval", "100", "--hidden-dropout", "0",
              "--attention-dropout", "0"]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    checkpoints = os.path.join(resumed, "checkpoints")
    result = pretrain(args_for(data, straight, iters, common))
    pretrain(args_for(data, resumed, iters, [*common, "--save", checkpoints, "--save-interval", str(stop),
                                             "--exit-interval", str(stop)]))
    assert read_tracker(checkpoints) == stop
    pretrain(args_for(data, resumed, iters, [*common, "--save", checkpoints, "--load", checkpoints]))
    a = read_metrics(os.path.join(straight, "metrics.jsonl"))
    b = read_metrics(os.path.join(resumed, "metrics.jsonl"))
    assert [r["iteration"] for r in b] == list(range(1, iters + 1))
    for x, y in zip(a, b):
        assert y["lm_loss"] == pytest.approx(x["lm_loss"], rel=1e-6), x["iteration"]
        assert y["data_mixture"] == pytest.approx(x["data_mixture"], rel=1e-9), x["iteration"]
        assert y["alignment"] == pytest.approx(x["alignment"], rel=1e-6, nan_ok=True), x["iteration"]
    return result.stdout, a, b


def test_the_early_phase_runs_and_resumes_exactly(tmp_path, data):
    """The default schedule of 3 sources against 2 training micro batches of 4 sequences: every 20
    iterations, and for the first third of 61 iterations every 10 on probes of 2 sequences. Stopped in
    the early phase and resumed, the run is the uninterrupted one: weights, scores and losses at every
    iteration, across the switch."""
    stdout, a, _ = straight_and_resumed(tmp_path, data, [], stop=15)
    assert ("updates the weights every 10 iterations until iteration 20 (--dga-early-fraction 0.333), on probes of "
            "2 of training's 4 sequences, then every 20 iterations") in stdout, stdout
    # Updates before iterations 11 (early), 21, 41 and 61.
    assert [r["dga_updates"]["done"] for r in a] == [sum(u < r["iteration"] for u in (10, 20, 40, 60)) for r in a]


def test_the_one_sequence_phase_probes_prefixes_beside_the_whole_specific_set_and_resumes_exactly(tmp_path, data):
    """At --dga-probe-budget 0.04, 4 probes against 2 training micro batches of 4 allow whole probes every
    50 iterations, and 4 x 10 / 50 is no whole sequence: each source's probe reads one sequence's tokens,
    as the first 8 of 32 tokens of 4 sequences, beside the specific set's 4 whole sequences, every 30
    iterations ((3 + 4) / (4 x 4) of whole probes' cost), to the end of the run: 3 x 4 x 8 + 4 x 32 probe
    tokens per update. Stopped between its two updates and resumed, the run is the uninterrupted one."""
    stdout, a, b = straight_and_resumed(tmp_path, data, ["--dga-probe-budget", "0.04"], stop=45)
    assert ("updates the weights every 30 iterations on probes of training's 4 sequences cut to their first 8 of 32 "
            "tokens, one sequence's tokens (the specific set's of all 4), to the end of the run") in stdout, stdout
    assert [r["dga_updates"]["done"] for r in a] == [sum(u < r["iteration"] for u in (30, 60)) for r in a]
    assert a[-1]["mixing_time"]["probe-tokens"] == 2 * (3 * 4 * 8 + 4 * 32)
    assert b[-1]["mixing_time"]["probe-tokens"] == 3 * 4 * 8 + 4 * 32  # the resumed process's own update
    assert a[-1]["data_mixture"]["dom0"] != pytest.approx(1 / 3)  # the weights moved


def test_without_prefixes_the_one_sequence_phase_probes_one_whole_sequence(tmp_path, data):
    """--no-dga-probe-prefixes: each source's probe is one whole sequence, 3 x 32 + 4 x 32 tokens per update."""
    run_dir = str(tmp_path / "whole")
    result = pretrain(args_for(data, run_dir, 31, ["--mixing", "dga", "--dga-probe-budget", "0.04",
                                                   "--no-dga-probe-prefixes", "--log-interval", "1"]))
    assert "on probes of 1 of training's 4 sequences (the specific set's of all 4)" in result.stdout, result.stdout
    assert read_metrics(os.path.join(run_dir, "metrics.jsonl"))[-1]["mixing_time"]["probe-tokens"] == 3 * 32 + 4 * 32


def test_prefix_probes_score_alike_under_sequence_parallelism(tmp_path, data):
    """Under sequence parallelism a prefix is a multiple of TP: at TP = 2 the sources' probes are the
    first 8 of 32 tokens, as in one process, and the run is the single process's (losses, the update's
    scores and weights) to within float reduction order."""
    common = ["--mixing", "dga", "--dga-probe-budget", "0.04", "--log-interval", "1", "--eval-interval", "100",
              "--hidden-dropout", "0", "--attention-dropout", "0"]
    single, split = str(tmp_path / "single"), str(tmp_path / "tp2-sp")
    pretrain(args_for(data, single, 31, common))
    result = pretrain(args_for(data, split, 31, [*common, "--tensor-model-parallel-size", "2", "--sequence-parallel"]),
                      nproc=2)
    assert "cut to their first 8 of 32 tokens" in result.stdout, result.stdout
    a, b = (read_metrics(os.path.join(d, "metrics.jsonl")) for d in (single, split))
    assert a[-1]["dga_updates"]["done"] == b[-1]["dga_updates"]["done"] == 1
    for x, y in zip(a, b):
        assert y["lm_loss"] == pytest.approx(x["lm_loss"], rel=1e-4), x["iteration"]
    assert b[-1]["alignment"] == pytest.approx(a[-1]["alignment"], rel=1e-3)
    assert b[-1]["data_mixture"] == pytest.approx(a[-1]["data_mixture"], rel=1e-3)
    assert a[-1]["data_mixture"]["dom0"] != pytest.approx(1 / 3)  # the update moved the weights


def test_a_resume_on_another_schedule_says_so(tmp_path, data):
    """Saved while updating every 10 iterations (--dga-probe-budget 0.2), resumed at the default budget
    (every 20, the step scaled by sqrt 2): the resumed run names both schedules."""
    run_dir, checkpoints = str(tmp_path / "run"), str(tmp_path / "checkpoints")
    common = ["--mixing", "dga", "--log-interval", "1", "--eval-interval", "100", "--save", checkpoints]
    # Runs long enough for an update on each schedule: a derived interval the run never reaches is refused.
    pretrain(args_for(data, run_dir, 11, [*common, "--dga-probe-budget", "0.2"]))
    same = pretrain(args_for(data, run_dir, 12, [*common, "--load", checkpoints, "--dga-probe-budget", "0.2"]))
    assert "the checkpoint's DGA updated" not in same.stdout
    moved = pretrain(args_for(data, run_dir, 21, [*common, "--load", checkpoints]))
    assert ("the checkpoint's DGA updated every 10 iterations, step 0.5 and clip 1; this run updates every 20 "
            "iterations, step 0.707 and clip 1.41") in moved.stdout


def test_max_epochs_bounds_how_often_dga_reads_the_domain_it_prefers(tmp_path, data):
    """DGA puts 0.9 and more on dom1 (the test above); --dga-max-epochs 1 keeps dom1's weight at its
    sequences over the run's, and dom1 is read at most once, give or take the blend's rounding."""
    run_dir = str(tmp_path / "capped")
    result = pretrain(args_for(data, run_dir, 80, ["--mixing", "dga", "--dga-update-interval", "5", "--log-interval", "5",
                                                   "--eval-interval", "100", "--dga-max-epochs", "1"]))
    assert "--dga-max-epochs 1 bounds the weights of the domains that a run of 640 sequences" in result.stdout
    records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
    final = records[-1]
    sequences = final["domain_tokens"]["dom1"] / 32 / final["domain_epochs"]["dom1"]  # per epoch (--seq-length 32)
    cap = sequences / (80 * 8)
    assert cap < 0.6  # the bound binds
    assert max(r["data_mixture"]["dom1"] for r in records) <= cap * (1 + 1e-9)
    assert final["data_mixture"]["dom1"] == pytest.approx(cap, rel=1e-3)  # the EMA approaches the cap
    assert final["domain_epochs"]["dom1"] <= 1 + 8 / sequences  # within one batch of draws


def test_importance_sampling_uses_the_histogram(tmp_path, data):
    histogram = {"clusters": ["dom0", "dom1", "dom2"], "counts": [1, 6, 3], "weights": [0.1, 0.6, 0.3]}
    path = tmp_path / "assign_specific.json"
    path.write_text(json.dumps(histogram))
    run_dir = str(tmp_path / "importance")
    pretrain(args_for(data, run_dir, 4, ["--mixing", "importance", "--importance-histogram", str(path),
                                         "--log-interval", "2", "--eval-interval", "100"]))
    record = read_metrics(os.path.join(run_dir, "metrics.jsonl"))[-1]
    assert record["data_mixture"] == pytest.approx({"dom0": 0.1, "dom1": 0.6, "dom2": 0.3})
    # 4 iterations x 8 sequences drawn in those proportions (greedy, within one sequence).
    drawn = np.array([record["domain_tokens"][d] for d in ("dom0", "dom1", "dom2")]) / 32
    assert np.all(np.abs(drawn - np.array([0.1, 0.6, 0.3]) * 32) <= 1)


def test_histogram_matching_and_smoothing():
    names = ["a", "b", "c"]
    hist = {"clusters": ["c", "a", "b"], "counts": [2, 6, 0]}
    np.testing.assert_allclose(histogram_weights(hist, names, "h.json"), [0.75, 0.0, 0.25])
    with pytest.raises(ValueError, match="domains without a cluster: \\['c'\\]"):
        histogram_weights({"clusters": ["a", "b"], "counts": [1, 1]}, names, "h.json")
    from megatron_dga.mixing.importance import ImportanceMixing

    mixed = ImportanceMixing(names, np.array([0.75, 0.0, 0.25]), natural=np.array([1.0, 1.0, 2.0]), smoothing=0.2)
    np.testing.assert_allclose(mixed.weights(), 0.8 * np.array([0.75, 0.0, 0.25]) + 0.2 * np.array([0.25, 0.25, 0.5]))


def test_dga_over_base_distributions(tmp_path, data):
    """Distribution reweighting: DGA learns weights over N base distributions (here 2 over 3
    domains), one probe per base; domains are sampled from the weighted mixture of bases."""
    bases = tmp_path / "bases.json"
    bases.write_text(json.dumps({"bases": [[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]}))
    run_dir = str(tmp_path / "bases")
    pretrain(args_for(data, run_dir, 30, ["--mixing", "dga", "--dga-base-distributions", str(bases),
                                          "--dga-min-domain-weight", "0.05", "--dga-update-interval", "5",
                                          "--log-interval", "5", "--eval-interval", "100"]))
    record = read_metrics(os.path.join(run_dir, "metrics.jsonl"))[-1]
    assert set(record["alignment"]) == {"base_0", "base_1"}
    w = record["dga_source_weights"]
    assert w["base_0"] > w["base_1"]  # the base holding the specific set's domain wins
    mixed = {"dom0": 0.5 * w["base_1"], "dom1": w["base_0"], "dom2": 0.5 * w["base_1"]}
    # The domain floor lifts only the domains below 0.05, taking the mass from the others.
    below = {d for d, p in mixed.items() if p < 0.05}
    rest = 1 - 0.05 * len(below)
    above_total = sum(p for d, p in mixed.items() if d not in below)
    assert record["data_mixture"] == pytest.approx(
        {d: 0.05 if d in below else rest * p / above_total for d, p in mixed.items()})
