"""TensorBoard event files and the metrics file hold the named series."""

import glob

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

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
