"""The dynamic blend and the domain streams behind it."""

import numpy as np
import pytest

from megatron_dga.data.batches import TrainBatches
from megatron_dga.data.blend import DynamicBlend
from megatron_dga.data.domains import open_domains
from megatron_dga.config import DataConfig
from megatron_dga.parallel.layout import Layout
from pretrain_helpers import make_domains


def history_blend():
    blend = DynamicBlend(3, [0.5, 0.3, 0.2])
    blend.lookup(0, 700)
    blend.set_weights(700, [0.1, 0.1, 0.8])
    blend.lookup(700, 1800)
    blend.set_weights(1800, [0.2, 0.6, 0.2])
    return blend


def test_same_history_gives_same_plan():
    # Two ranks that see the same weight history, asking in different orders and amounts.
    a, b = history_blend(), DynamicBlend(3, [0.5, 0.3, 0.2])
    b.set_weights(700, [0.1, 0.1, 0.8])  # planned lazily, never looked at before the change
    b.set_weights(1800, [0.2, 0.6, 0.2])
    da, ka = a.lookup(0, 5000)
    db, kb = b.lookup(0, 5000)
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(ka, kb)


def test_replan_changes_only_unconsumed_positions():
    blend = DynamicBlend(3, [0.5, 0.3, 0.2])
    before_d, before_k = blend.lookup(0, 3000)
    blend.set_weights(1234, [0.0, 0.0, 1.0])
    after_d, after_k = blend.lookup(0, 3000)
    np.testing.assert_array_equal(after_d[:1234], before_d[:1234])
    np.testing.assert_array_equal(after_k[:1234], before_k[:1234])
    assert np.all(after_d[1234:] == 2)
    # Domain 2 continues its draw numbering where it was.
    assert after_k[1234] == np.sum(before_d[:1234] == 2)
    with pytest.raises(ValueError, match="only change at or after position 1234"):
        blend.set_weights(1000, [1, 1, 1])


def test_realised_counts_track_the_weights():
    blend = history_blend()
    domains, draws = blend.lookup(0, 6000)
    for lo, hi, w in [(0, 700, [0.5, 0.3, 0.2]), (700, 1800, [0.1, 0.1, 0.8]), (1800, 6000, [0.2, 0.6, 0.2])]:
        counts = np.bincount(domains[lo:hi], minlength=3)
        # The greedy rule stays within a couple of samples of the target in every segment.
        assert np.all(np.abs(counts - np.array(w) * (hi - lo)) <= 2), (lo, counts)
    for d in range(3):  # every domain's draws are 0, 1, 2, ... in order
        np.testing.assert_array_equal(draws[domains == d], np.arange(np.sum(domains == d)))
    np.testing.assert_array_equal(blend.draws_before(4321), np.bincount(domains[:4321], minlength=3))


def test_resume_from_state_dict_plans_the_same():
    blend = history_blend()
    expected = blend.lookup(2500, 4000)
    blend.release_before(2500)
    resumed = DynamicBlend(3, [1, 1, 1])
    resumed.load_state_dict(blend.state_dict())
    got = resumed.lookup(2500, 4000)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])
    with pytest.raises(ValueError, match="already consumed"):
        resumed.lookup(100, 200)


def test_domains_run_out_into_new_shuffled_epochs(tmp_path):
    manifest = make_domains(str(tmp_path), docs_per_domain=10)
    domains, _, _ = open_domains(DataConfig(domains_manifest=manifest, split="100,0,0"), seq_length=16, seed=3)
    stream = domains[0].train
    n = stream.samples_per_epoch
    epoch0 = [stream.sample(k).tolist() for k in range(n)]
    epoch1 = [stream.sample(k).tolist() for k in range(n, 2 * n)]
    assert epoch0 != epoch1  # a new order ...
    # ... over the same documents: every token of the domain appears in both epochs equally
    # often, up to the one-token tail a pass leaves at the end.
    flat0, flat1 = np.concatenate(epoch0), np.concatenate(epoch1)
    assert abs(len(flat0) - len(flat1)) == 0
    assert stream.epochs(2 * n) == 2.0 and stream.epochs(n // 2) == pytest.approx(0.5, abs=0.1)
    assert stream.sample(5).tolist() == epoch0[5]  # draws are a pure function of their number


def test_domain_max_tokens_caps_each_domain(tmp_path):
    manifest = make_domains(str(tmp_path), docs_per_domain=40)
    capped, _, _ = open_domains(DataConfig(domains_manifest=manifest, split="100,0,0", domain_max_tokens=500),
                                seq_length=16, seed=3)
    assert all(d.train_tokens == 500 for d in capped)
    assert all(d.train.samples_per_epoch == (500 - 1) // 16 for d in capped)


def test_every_rank_reads_its_share_of_the_global_batch(tmp_path):
    manifest = make_domains(str(tmp_path))
    domains, _, _ = open_domains(DataConfig(domains_manifest=manifest, split="100,0,0"), seq_length=16, seed=3)
    streams = [d.train for d in domains]
    single = TrainBatches(streams, DynamicBlend(3, [1, 2, 3]), Layout(1, 1, 1, 1, 2, 8), 0, None, False)
    ranks = [TrainBatches(streams, DynamicBlend(3, [1, 2, 3]), Layout(2, 1, 1, 2, 2, 8), r, None, False)
             for r in range(2)]
    for iteration in (0, 5):
        whole = [mb.tokens for mb in single.microbatches(iteration)]
        shares = [[mb.tokens for mb in r.microbatches(iteration)] for r in ranks]
        # micro batch m of rank r is global micro batch m * DP + r
        interleaved = [shares[m % 2][m // 2] for m in range(4)]
        for a, b in zip(whole, interleaved):
            assert np.array_equal(a.numpy(), b.numpy())


def test_setting_the_same_weights_changes_nothing():
    blend = DynamicBlend(3, [1, 1, 1])
    before = blend.lookup(0, 2000)
    blend.set_weights(500, [1, 1, 1])
    after = blend.lookup(0, 2000)
    assert blend.state_dict() == DynamicBlend(3, [1, 1, 1]).state_dict()
    np.testing.assert_array_equal(before[0], after[0])


@pytest.mark.parametrize("planned", [0, 35, 80])
def test_resume_after_a_change_at_a_future_position_plans_the_same(planned):
    """Weights set to change at a position after the first unconsumed one (the trainer changes
    them at the first unconsumed position; the method allows later ones): the state saved
    before the change takes effect resumes into the same plan, whatever was planned already."""
    blend = DynamicBlend(3, [0.5, 0.3, 0.2])
    blend.lookup(0, 20)
    blend.release_before(10)
    if planned:
        blend.lookup(10, planned)
    blend.set_weights(50, [0.1, 0.1, 0.8])
    resumed = DynamicBlend(3, [0.5, 0.3, 0.2])
    resumed.load_state_dict(blend.state_dict())
    for a, b in zip(blend.lookup(10, 400), resumed.lookup(10, 400)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(blend.draws_before(400), resumed.draws_before(400))
    np.testing.assert_allclose(resumed.weights, [0.1, 0.1, 0.8])
