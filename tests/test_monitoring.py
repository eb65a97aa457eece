"""TensorBoard event files and the metrics file hold the named series."""

import glob

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from megatron_dga.training.metrics import MetricsLogger
from pretrain_helpers import SMALL_MODEL, make_domains, pretrain, read_metrics


def test_tensorboard_and_metrics_file(tmp_path):
    manifest = make_domains(str(tmp_path / "data"))
    tb, metrics = tmp_path / "tb", tmp_path / "metrics.jsonl"
    pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
              "--train-iters", "4", "--log-interval", "2", "--eval-interval", "2", "--eval-iters", "1",
              "--split", "90,10,0", "--tensorboard-dir", str(tb), "--metrics-file", str(metrics)])

    assert glob.glob(str(tb / "events.out.tfevents.*"))
    events = EventAccumulator(str(tb))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for tag in ["lm loss", "learning-rate", "grad-norm", "iteration-time", "tokens-per-second", "lm loss validation",
                "lm loss validation/dom0", "data-mixture/dom0", "domain-epochs/dom2", "domain-tokens/dom1"]:
        assert tag in tags, tag
    assert [e.step for e in events.Scalars("lm loss")] == [2, 4]
    assert [e.step for e in events.Scalars("lm loss validation")] == [2, 4]

    train = read_metrics(str(metrics))
    assert [r["iteration"] for r in train] == [2, 4]
    for key in ["consumed_samples", "lm_loss", "learning_rate", "grad_norm", "iteration_time", "tokens_per_second",
                "data_mixture", "domain_epochs", "domain_tokens"]:
        assert key in train[0], key
    assert train[1]["consumed_samples"] == 16
    assert abs(sum(train[0]["data_mixture"].values()) - 1) < 1e-9
    validation = read_metrics(str(metrics), kind="validation")
    assert [r["iteration"] for r in validation] == [2, 4]
    assert set(validation[0]["per_set"]) == {"dom0", "dom1", "dom2"}


def scalar_steps(tensorboard_dir, tag):
    """{step: value} of a scalar, from whichever run folder under the directory holds it."""
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    runs = EventMultiplexer(size_guidance={"scalars": 0}).AddRunsFromDirectory(str(tensorboard_dir))
    runs.Reload()
    found = [run for run, tags in runs.Runs().items() if tag in tags["scalars"]]
    assert len(found) == 1, (tag, runs.Runs())
    return [(e.step, e.value) for e in runs.Scalars(found[0], tag)]


def log_iterations(logger, first, last, batch, value):
    for iteration in range(first, last + 1):
        logger.scalars(iteration, {"lm loss": value + iteration}, samples=iteration * batch)
    logger.close()


def test_a_resumed_run_shows_each_step_once_with_its_history_kept(tmp_path):
    # A run logs to iteration 6, is killed, and resumes from its checkpoint at 3 (24 samples):
    # steps 4-6 are shown once, from the resumed run, and both series keep steps 1-3.
    tb, batch = tmp_path / "tb", 8
    log_iterations(MetricsLogger(True, str(tb), None), 1, 6, batch, value=100.0)
    log_iterations(MetricsLogger(True, str(tb), None, resumed_iteration=3, resumed_samples=3 * batch), 4, 8, batch,
                   value=200.0)
    expected = [100.0 + i for i in range(1, 4)] + [200.0 + i for i in range(4, 9)]
    assert scalar_steps(tb, "lm loss") == list(zip(range(1, 9), expected))
    assert scalar_steps(tb, "lm loss vs samples") == list(zip(range(batch, 9 * batch, batch), expected))


def test_a_run_started_again_before_its_first_checkpoint_shows_each_step_once(tmp_path):
    tb, batch = tmp_path / "tb", 8
    log_iterations(MetricsLogger(True, str(tb), None), 1, 2, batch, value=100.0)  # killed before a save
    log_iterations(MetricsLogger(True, str(tb), None), 1, 3, batch, value=200.0)
    assert scalar_steps(tb, "lm loss") == [(i, 200.0 + i) for i in range(1, 4)]
    assert scalar_steps(tb, "lm loss vs samples") == [(i * batch, 200.0 + i) for i in range(1, 4)]
