"""The DGA update rule: hand-computed examples, the floor, the step control, non-finite
alignment, invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_dga.mixing.dga import PAPER_UPDATE, DGAHyperparameters, DGAMixing, lift_to_floor

NAMES = ["a", "b", "c"]


def hyperparameters(**changes):
    """The paper's update with `changes`: each test turns on the parts it checks."""
    return DGAHyperparameters(**{**PAPER_UPDATE, **changes})


def dga(initial=(0.5, 0.3, 0.2), **hyper):
    return DGAMixing(NAMES, np.array(initial), hyperparameters(**hyper))


def dga_default(initial=(0.5, 0.3, 0.2), **changes):
    """The framework's default update (Adam score, step control) with `changes`."""
    return DGAMixing(NAMES, np.array(initial), DGAHyperparameters(**changes))


def test_ema_state_mode_by_hand():
    m = dga(lr=0.5, ema=0.5, ema_mode="state")
    assert m.update(10, [1.0, 0.0, -1.0])
    # 0.5 * previous + 0.5 * step, then the next step starts from the smoothed weights
    np.testing.assert_allclose(m.weights(), [0.5808913174033616, 0.27041743742270596, 0.14869124517393242], rtol=1e-12)
    assert m.update(20, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(m.weights(), [0.5375439630367347, 0.3248604509990125, 0.13759558596425292], rtol=1e-12)


def test_ema_sampling_mode_by_hand():
    m = dga(lr=0.5, ema=0.5, ema_mode="sampling")
    m.update(10, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(m.weights(), [0.5808913174033616, 0.27041743742270596, 0.14869124517393242], rtol=1e-12)
    # The mirror state moved unsmoothed, so the second step starts from the raw step ...
    np.testing.assert_allclose(np.exp(m.log_state), [0.6617826348067233, 0.24083487484541197, 0.09738249034786482], rtol=1e-12)
    m.update(20, [0.0, 1.0, 0.0])
    # ... and only what is sampled is smoothed.
    np.testing.assert_allclose(m.weights(), [0.5766257185764003, 0.30691675463618473, 0.11645752678741492], rtol=1e-12)


def test_no_ema_is_the_plain_step():
    m = dga(lr=0.5, ema=0.0)
    m.update(10, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(m.weights(), [0.6617826348067233, 0.24083487484541197, 0.09738249034786482], rtol=1e-12)


def test_floor_keeps_every_domain():
    m = dga(lr=100.0, ema=0.0, min_weight=0.05)
    m.update(10, [1.0, -1.0, -1.0])
    w = m.weights()
    assert w.min() >= 0.05 - 1e-12 and abs(w.sum() - 1) < 1e-12
    assert w[0] == pytest.approx(1 - 2 * 0.05, abs=1e-9)


@pytest.mark.parametrize("bad", [[np.nan, 0.0, 1.0], [np.inf, 0.0, 0.0], [-np.inf, 1.0, 2.0]])
def test_non_finite_alignment_skips_the_update(bad, caplog):
    m = dga(lr=1.0)
    before = m.weights()
    assert m.update(10, bad) is False
    np.testing.assert_array_equal(m.weights(), before)
    assert m.skipped == 1 and m.updates == 0
    assert "skipped" in caplog.text
    assert m.update(20, [0.1, 0.0, 0.0]) is True  # and the next finite one goes through


def test_update_schedule():
    m = dga(update_interval=5, warmup_iters=10)
    assert [t for t in range(31) if m.wants_update(t)] == [10, 15, 20, 25, 30]


@pytest.mark.parametrize("hyper", [dict(), dict(ema=0.3, ema_mode="sampling", min_weight=0.05)],
                         ids=["defaults", "sampling-floor"])
def test_state_round_trip(hyper):
    """With the default step control every running statistic (the scale's window, the score
    average) is part of the state: a copy resumed from it takes the same steps."""
    rng = np.random.default_rng(0)
    m = DGAMixing(NAMES, np.array([0.5, 0.3, 0.2]), DGAHyperparameters(**hyper))
    for t in range(1, 6):
        m.update(10 * t, rng.standard_normal(3) * 10.0 ** t, lr_scale=0.5)
    assert m.log_spreads and np.any(m.score_average != 0)
    n = DGAMixing(NAMES, np.array([0.5, 0.3, 0.2]), DGAHyperparameters(**hyper))
    n.load_state_dict(m.state_dict())
    for t in range(6, 10):
        a = rng.standard_normal(3)
        m.update(10 * t, a)
        n.update(10 * t, a)
        np.testing.assert_array_equal(m.weights(), n.weights())
        np.testing.assert_array_equal(m.last_step, n.last_step)


def test_base_distributions_mix_domains():
    bases = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    m = DGAMixing(NAMES, np.array([0.5, 0.5]), hyperparameters(lr=1.0, ema=0.0), base_distributions=bases)
    np.testing.assert_allclose(m.weights(), [0.5, 0.25, 0.25])
    m.update(10, [0.0, 1.0])
    w_bases = np.array([1.0, np.e]) / (1 + np.e)
    np.testing.assert_allclose(m.weights(), w_bases @ bases, rtol=1e-12)
    assert set(m.log_values()["alignment"]) == {"base_0", "base_1"}


EXTREME = st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0]))


@settings(max_examples=300, deadline=None)
@given(
    initial=st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=8),
    steps=st.lists(st.lists(EXTREME, min_size=8, max_size=8), max_size=6),
    lr=st.one_of(st.floats(0.0, 100.0), st.just(1e10)),
    lr_scale=st.sampled_from([1.0, 0.1, 0.0]),
    ema=st.floats(0.0, 0.99),
    mode=st.sampled_from(["state", "sampling"]),
    floor=st.floats(0.0, 0.1),
    domain_floor=st.floats(0.0, 0.1),
    with_bases=st.booleans(),
    scale=st.sampled_from(["none", "spread"]),
    window=st.sampled_from([1, 3, 9]),
    clip=st.sampled_from([0.0, 0.5, 5.0]),
    score_ema=st.sampled_from([0.0, 0.5]),
    cap=st.sampled_from([None, 0.3, 0.6]),
)
def test_weights_stay_finite_on_the_simplex(initial, steps, lr, lr_scale, ema, mode, floor, domain_floor, with_bases,
                                            scale, window, clip, score_ema, cap):
    """Whatever the alignments (NaN, infinities, 1e300), the weights stay finite, on the
    simplex, above both floors and below the caps; and they are not frozen: after the extremes,
    ordinary scores move them again within (W + 1) / 2 updates."""
    n = len(initial)
    k = n + 2 if with_bases else n
    bases = None
    if with_bases:  # each base on its own domain, and the last two domains shared by every base
        bases = np.hstack([np.eye(n), np.full((n, 2), 0.5)])
    floor, domain_floor = min(floor, 0.9 / n), min(domain_floor, 0.9 / k)
    caps = None if cap is None else np.full(k, max(cap, 1.5 / k))
    m = DGAMixing([f"d{i}" for i in range(k)], np.array(initial), hyperparameters(
        lr=lr, ema=ema, ema_mode=mode, min_weight=floor, min_domain_weight=domain_floor, step_scale=scale,
        scale_window=window, step_clip=clip, score_ema=score_ema, scale_by_lr=True), base_distributions=bases,
        max_domain_weights=caps)

    def check():
        w, sources = m.weights(), m.sampling
        assert np.all(np.isfinite(w)) and abs(w.sum() - 1.0) < 1e-9
        assert abs(sources.sum() - 1.0) < 1e-9 and sources.min() >= floor * (1 - 1e-9)
        assert w.min() >= domain_floor * (1 - 1e-9)
        if caps is not None:
            assert np.all(w <= caps * (1 + 1e-9))
        if floor > 0 or domain_floor > 0:
            assert w.min() > 0
        assert np.all(np.isfinite(m.log_state)) and np.all(np.isfinite(m.log_smoothed))

    for t, step in enumerate(steps, start=1):
        m.update(t * 10, step[:n], lr_scale=lr_scale)
        check()
    assert m.updates + m.skipped == len(steps)
    ordinary = np.linspace(1.0, -1.0, n)
    for i, t in enumerate(range(len(steps) + 1, len(steps) + window + 2)):
        moved = m.update(t * 10, ordinary, lr_scale=1.0)
        # after scores spread by 1e-300, the running scale follows ordinary ones in (W + 1) / 2
        # updates; the steps before that may overflow and be skipped
        assert moved or i < (window - 1) // 2
        check()
    if lr >= 1e-3:
        assert np.abs(m.last_step).max() > 1e-6 * min(lr, clip or np.inf), m.last_step


def test_an_overflowing_step_is_skipped(caplog):
    m = dga(lr=1e10)
    before = m.weights()
    assert m.update(10, [1e300, 0.0, 0.0]) is False  # 1e310 is not a double
    np.testing.assert_array_equal(m.weights(), before)
    assert m.skipped == 1 and "overflows" in caplog.text


def test_the_running_scale_follows_a_change_of_scale_even_when_steps_overflow_meanwhile():
    """Scores spread by 1e-300 set a running scale of 1e-300; the first ordinary scores after
    them then overflow (1e10 / 1e-300). Their spread must still enter the running scale, which
    then follows it within (W + 1) / 2 updates, as for any lasting change of scale: before, the
    overflowing update was skipped with its spread, the scale never moved and DGA froze."""
    m = dga(lr=1e10, step_scale="spread", scale_window=3)
    for t in (1, 2):
        assert m.update(10 * t, [0.0, 1e-300, 0.0])
    assert not m.update(30, [1.0, -1.0, 0.0])  # eta x 1 / 1e-300 is not a double: skipped
    before = m.weights()
    assert m.update(40, [1.0, -1.0, 0.0])  # two of the last three spreads are now ordinary
    assert m.weights()[0] > before[0]


@pytest.mark.parametrize("mode", ["state", "sampling"])
@pytest.mark.parametrize("floor", [0.02, 0.1])
def test_a_zero_step_leaves_the_weights_unchanged_under_any_floor(mode, floor):
    """--dga-lr 0: whatever the alignment, the weights stay where they started (lifted once
    to the floor if they started below it); the floor is not applied again at every update."""
    rng = np.random.default_rng(1)
    names = [f"s{i}" for i in range(4)]
    m = DGAMixing(names, np.array([0.66, 0.20, 0.07, 0.07]), DGAHyperparameters(lr=0.0, ema_mode=mode,
                                                                                 min_weight=floor))
    start = m.weights()
    np.testing.assert_allclose(start, lift_to_floor(np.array([0.66, 0.20, 0.07, 0.07]), floor), rtol=1e-12)
    for t in range(1, 51):
        assert m.update(10 * t, rng.standard_normal(4))
    np.testing.assert_allclose(m.weights(), start, rtol=1e-12)


@pytest.mark.parametrize("mode", ["state", "sampling"])
def test_a_source_that_always_scores_worst_settles_at_its_floor(mode):
    """With the default step (not a huge eta that would hide a drift) the worst source goes
    down to the floor m and stays there, exactly: the floor is not compounded by the EMA
    (m / (1 - (1 - N m) beta)) nor applied on top of an iterate already floored."""
    names = [f"s{i}" for i in range(4)]
    m = DGAMixing(names, np.full(4, 0.25), DGAHyperparameters(ema_mode=mode, min_weight=0.05, scale_by_lr=False))
    for t in range(1, 101):
        m.update(10 * t, [-1.0, 0.5, 0.2, 0.0])
    assert m.weights()[0] == pytest.approx(0.05, abs=1e-9)
    assert m.weights().sum() == pytest.approx(1.0, abs=1e-12)


def test_natural_initial_weights_give_each_base_its_token_share(tmp_path):
    """--dga-initial-weights natural over base distributions: domain 0 (500 tokens) alone in
    base 0, five domains of 100 tokens in base 1: each base holds half the tokens, so each
    starts at 0.5 and the domains start at their natural shares."""
    import json

    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing

    path = tmp_path / "bases.json"
    path.write_text(json.dumps([[1, 0, 0, 0, 0, 0], [0, 1, 1, 1, 1, 1]]))
    config = MixingConfig(mixing="dga", dga_initial_weights="natural", dga_base_distributions=str(path))
    m = build_mixing(config, [f"d{i}" for i in range(6)], [500, 100, 100, 100, 100, 100], microbatches=(2, 1))
    np.testing.assert_allclose(m.sampling, [0.5, 0.5], rtol=1e-12)
    np.testing.assert_allclose(m.weights(), [0.5, 0.1, 0.1, 0.1, 0.1, 0.1], rtol=1e-12)


def test_a_source_pushed_below_the_smallest_double_comes_back():
    m = dga(initial=(1 / 3, 1 / 3, 1 / 3), lr=1.0, ema=0.0)
    m.update(10, [-1e6, 0.0, 0.0])
    assert m.weights()[0] < 1e-300  # exp(-1e6) is not a double ...
    m.update(20, [800.0, 0.0, 0.0])
    assert m.weights()[0] > 0.99  # ... but its log-weight stayed finite


def test_centring_changes_nothing():
    a, b = dga(lr=0.5), dga(lr=0.5)
    a.update(10, [1.0, 0.0, -1.0])
    b.update(10, [101.0, 100.0, 99.0])
    np.testing.assert_allclose(a.weights(), b.weights(), rtol=1e-12)


def test_spread_scale_makes_the_step_independent_of_the_gradient_scale():
    small, large = dga(lr=0.5, step_scale="spread"), dga(lr=0.5, step_scale="spread")
    for t, a in enumerate([[1.0, 0.0, -1.0], [0.2, 0.5, -0.1], [-1.0, 2.0, 0.0]], start=1):
        small.update(10 * t, a)
        large.update(10 * t, 1000.0 * np.array(a))
    np.testing.assert_allclose(small.weights(), large.weights(), rtol=1e-10)
    # The first update divides by its own robust spread: a step of eta x (a - median) /
    # (1.4826 x median |a - median|), here 0.5 x [1, 0, -1] / 1.4826.
    first = dga(lr=0.5, step_scale="spread", ema=0.0)
    first.update(10, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(first.last_step, 0.5 * np.array([1.0, 0.0, -1.0]) / 1.4826, rtol=1e-12)
    # An outlier does not set the scale: [3, 80, 5, 4, 6] has median 5 and spread 1.4826 x 1.
    outlier = DGAMixing([f"s{i}" for i in range(5)], np.full(5, 0.2),
                        hyperparameters(lr=1.0, step_scale="spread", ema=0.0))
    outlier.update(10, [3.0, 80.0, 5.0, 4.0, 6.0])
    np.testing.assert_allclose(outlier.last_step, np.array([-2.0, 75.0, 0.0, -1.0, 1.0]) / 1.4826, rtol=1e-12)


def test_clip_bounds_the_change_of_every_log_weight():
    m = dga(initial=(1 / 3, 1 / 3, 1 / 3), lr=1.0, ema=0.0, step_clip=0.5)
    m.update(10, [80.0, 0.0, 0.0])  # one unlucky pair of probes
    np.testing.assert_allclose(m.last_step, [0.5, 0.0, 0.0])  # centred on the median, 0
    w = m.weights()
    assert w[0] / w[1] == pytest.approx(np.exp(0.5))


def test_learning_rate_factor_scales_the_step():
    m = dga(lr=1.0, ema=0.0, scale_by_lr=True)
    m.update(10, [1.0, 0.0, -1.0], lr_scale=0.25)
    np.testing.assert_allclose(m.last_step, [0.25, 0.0, -0.25])
    n = dga(lr=1.0, ema=0.0)  # without the flag the factor is ignored
    n.update(10, [1.0, 0.0, -1.0], lr_scale=0.25)
    np.testing.assert_allclose(n.last_step, [1.0, 0.0, -1.0])


def test_score_ema_by_hand():
    m = dga(lr=1.0, ema=0.0, score_ema=0.5)
    m.update(10, [1.0, 0.0, -1.0])
    np.testing.assert_allclose(m.last_step, [1.0, 0.0, -1.0])  # bias-corrected first average
    m.update(20, [-1.0, 0.0, 1.0])
    # (0.5 * 0.5 * [1, 0, -1] + 0.5 * [-1, 0, 1]) / (1 - 0.25) = [-1/3, 0, 1/3]
    np.testing.assert_allclose(m.last_step, [-1 / 3, 0.0, 1 / 3])


def test_the_score_average_is_taken_over_clipped_steps():
    m = dga(lr=1.0, ema=0.0, score_ema=0.5, step_clip=1.0)
    m.update(10, [0.0, 80.0, 0.0])  # clipped to [0, 1, 0] before it is averaged
    m.update(20, [0.0, 0.0, 0.0])
    np.testing.assert_allclose(m.last_step, [0.0, 0.25 / 0.75, 0.0])


def test_stderr_is_logged():
    m = dga()
    m.update(10, [1.0, 0.0, -1.0], stderr=[0.1, 0.2, 0.3])
    values = m.log_values()
    assert values["alignment-stderr"] == {"a": 0.1, "b": 0.2, "c": 0.3}
    assert values["dga-noise"]["stderr-rms"] == pytest.approx(np.sqrt((0.01 + 0.04 + 0.09) / 3))


def test_domain_floor_bounds_every_domain_under_base_distributions():
    """With base distributions the source floor bounds a domain only through its share in its
    bases; the domain floor bounds it directly. It lifts only the domains below it, to exactly
    m_d, and takes the mass from the others in proportion, so their ratios do not change."""
    bases = np.array([[1.0, 0.0, 0.0], [0.0, 1.0 - 1e-4, 1e-4]])  # c: a tiny share of base 1
    changes = dict(lr=100.0, ema=0.0, min_weight=0.05)
    plain = DGAMixing(NAMES, np.array([0.5, 0.5]), hyperparameters(**changes), base_distributions=bases)
    floored = DGAMixing(NAMES, np.array([0.5, 0.5]), hyperparameters(**changes, min_domain_weight=0.01),
                        base_distributions=bases)
    for m in (plain, floored):
        m.update(10, [1.0, -1.0])
    mixed = plain.weights()
    assert mixed[2] < 1e-5  # the source floor alone leaves c a few parts per million
    w = floored.weights()
    assert w[2] == pytest.approx(0.01, rel=1e-12) and w.sum() == pytest.approx(1.0, rel=1e-12)
    np.testing.assert_allclose(w[:2], mixed[:2] * (1 - 0.01) / mixed[:2].sum(), rtol=1e-12)


def test_the_domain_floor_moves_only_the_mass_it_must():
    """Domains already above the floor keep their weights when none is below it, and a lifted
    domain cannot push another below the floor (the lift is repeated until none is)."""
    m = DGAMixing(NAMES, np.array([0.5, 0.5]), hyperparameters(min_domain_weight=0.1),
                  base_distributions=np.array([[0.6, 0.4, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(m.weights(), [0.3, 0.2, 0.5], rtol=1e-12)  # all above 0.1: unchanged
    names = [f"d{i}" for i in range(4)]
    lifted = DGAMixing(names, np.array([1.0]), hyperparameters(min_domain_weight=0.2),
                       base_distributions=np.array([[0.7, 0.21, 0.08, 0.01]]))
    # d3 and d2 lift to 0.2 each; scaling the rest by 0.6 / 0.91 would put d1 at 0.138, so it
    # is lifted too, and d0 keeps the remaining 0.4.
    np.testing.assert_allclose(lifted.weights(), [0.4, 0.2, 0.2, 0.2], rtol=1e-12)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=40).filter(lambda w: sum(w) > 0),
       st.floats(0.0, 0.999))
def test_lift_to_floor_is_on_the_simplex_above_the_floor(weights, fraction):
    p = np.array(weights) / sum(weights)
    floor = fraction / len(p)
    q = lift_to_floor(p, floor)
    assert q.sum() == pytest.approx(1.0, rel=1e-9) and np.all(q >= floor * (1 - 1e-12))
    kept = q > floor * (1 + 1e-9)  # the domains not lifted keep their ratios to each other
    if kept.sum() >= 2:
        ratio = q[kept] / p[kept]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="--dga-ema"):
        dga(ema=1.0)
    with pytest.raises(ValueError, match="--dga-min-weight"):
        dga(min_weight=0.5)
    with pytest.raises(ValueError, match="--dga-min-domain-weight .* below 1/3"):
        dga(min_domain_weight=0.34)
    with pytest.raises(ValueError, match="--dga-update-interval"):
        dga(update_interval=0)
    with pytest.raises(ValueError, match="--dga-alignment"):
        dga(alignment="sine")
    with pytest.raises(ValueError, match="--dga-step-clip"):
        dga(step_clip=-1.0)
    with pytest.raises(ValueError, match="--dga-score-ema"):
        dga(score_ema=1.0)
    with pytest.raises(ValueError, match="--dga-scale-window"):
        dga(scale_window=0)
    with pytest.raises(ValueError, match="--dga-step-scale"):
        dga(step_scale="rms")


def test_a_source_cut_by_one_noisy_update_recovers_under_step_control():
    """One unlucky pair of probes scores source 1 at 80 (the others at most 6); from then on
    source 0 aligns best. A raw step of eta = 1 puts all the weight on source 1 for dozens of
    updates; with the step in RMS units, clipped, and a score average, source 0 leads within
    a few updates."""
    names = [f"s{i}" for i in range(5)]
    noisy_first = [3.0, 80.0, 5.0, 4.0, 6.0]
    later = [2.0, 0.5, 0.3, 0.2, 0.1]

    def run(**hyper):
        m = DGAMixing(names, np.full(5, 0.2), hyperparameters(ema=0.0, **hyper))
        m.update(10, noisy_first)
        leads = []
        for t in range(2, 12):
            m.update(10 * t, later)
            leads.append(int(np.argmax(m.weights())))
        return m.weights(), leads

    raw_weights, raw_leads = run(lr=1.0)
    assert raw_leads == [1] * 10 and raw_weights[0] < 1e-20
    weights, leads = run(lr=0.5, step_scale="spread", step_clip=1.0, score_ema=0.5)
    assert leads[-1] == 0 and weights[0] > 0.5, (weights, leads)
    assert leads.index(0) <= 5, leads


def test_one_outlying_update_does_not_shrink_the_steps_after_it():
    """Seen at k = 256 (16 base distributions): one update's alignments spread 50 times wider
    than every other's, pure noise (their standard errors as large). A running mean square
    took it whole, and every later step shrank with it: the weights froze for the rest of the
    run. The running scale is the median of the last spreads, which such an update does not
    move: the steps after it keep their size."""
    rng = np.random.default_rng(0)
    names = [f"s{i}" for i in range(16)]
    signal = np.linspace(1.0, -1.0, 16)
    normal = [signal + 0.3 * rng.standard_normal(16) for _ in range(12)]
    outliers = [50.0 * rng.standard_normal(16) for _ in range(3)]

    def later_steps(first_four, **hyper):
        m = DGAMixing(names, np.full(16, 1 / 16), DGAHyperparameters(**hyper))
        for t, a in enumerate(first_four + normal[4:], start=1):
            m.update(10 * t, a)
            if t == 8:  # four updates after the fourth
                return np.abs(m.last_step).mean()

    quiet = later_steps(normal[:4])
    assert later_steps(normal[:3] + outliers[:1]) == pytest.approx(quiet, rel=0.2)
    # Three outlying updates among the nine of the window move the scale no more.
    assert later_steps(outliers + normal[3:4]) == pytest.approx(quiet, rel=0.2)


def per_source_ratio(step, normal):
    """|step| / |normal| for the sources that move (the median source's step is 0)."""
    moving = np.abs(normal) > 1e-9
    return np.abs(step[moving]) / np.abs(normal[moving])


@pytest.mark.parametrize("factor", [0.01, 100.0, 1000.0])
def test_the_steps_follow_a_lasting_change_of_scale(factor):
    """The scale of the scores changes over training (the gradient norm falls, Adam's second
    moments fill up). After a lasting 100-fold fall, or a 100- or 1000-fold rise, every
    source's step is back within a factor 2 of its normal size within 10 updates: not stuck
    small for dozens of updates after a fall, and not saturating the step clip after a rise."""
    rng = np.random.default_rng(3)
    names = [f"s{i}" for i in range(5)]
    base = np.array([1.0, 0.5, 0.0, -0.5, -1.0])
    m = DGAMixing(names, np.full(5, 0.2), DGAHyperparameters(scale_by_lr=False))
    for t in range(1, 21):
        m.update(10 * t, base + 0.05 * rng.standard_normal(5))
    normal = m.last_step.copy()
    for t in range(21, 31):
        m.update(10 * t, factor * (base + 0.05 * rng.standard_normal(5)))
    ratio = per_source_ratio(m.last_step, normal)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), (factor, ratio)


def test_an_overflowing_spread_does_not_freeze_the_weights():
    """[1e160, 0, -1e160] is finite, but its square is not: a running mean square became
    infinite and every later step was 0, accepted rather than skipped. The running scale is
    kept as logarithms: the updates after it take their normal steps."""
    m, fresh = dga_default(), dga_default()
    assert m.update(10, [1e160, 0.0, -1e160])
    for t in range(2, 12):
        m.update(10 * t, [1.0, 0.0, -1.0])
        fresh.update(10 * t, [1.0, 0.0, -1.0])
    ratio = per_source_ratio(m.last_step, fresh.last_step)
    assert np.all((ratio > 0.5) & (ratio < 2.0)), ratio


def test_a_measurement_in_other_units_does_not_enter_the_running_scale():
    """Before the optimizer's first step Adam has no second moments and the meter falls back
    on the raw inner product, in other units: that update is scaled by its own spread and
    leaves the running scale of the Adam-preconditioned scores alone."""
    m = dga_default()
    for t in range(1, 6):
        m.update(10 * t, [1.0, 0.0, -1.0])
    window = list(m.log_spreads)
    assert m.update(60, [1e6, 0.0, -1e6], in_running_scale=False)
    assert m.log_spreads == window
    assert np.all(np.abs(m.last_step) <= 1.0)
    m.update(70, [1.0, 0.0, -1.0])
    assert m.log_spreads[-1] == pytest.approx(window[-1])


def test_command_line_defaults_are_the_algorithm_defaults():
    """One default set: the flags' defaults build DGAHyperparameters() (adam alignment, step control)."""
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import dga_hyperparameters

    assert dga_hyperparameters(MixingConfig(), DGAHyperparameters().update_interval) == DGAHyperparameters()
    assert DGAHyperparameters().alignment == "adam" and DGAHyperparameters().step_scale == "spread"


def test_default_update_interval_keeps_the_probes_within_the_budget(capsys):
    """The smallest multiple of 10 iterations whose probe passes, (sources + 1) x probe micro batches,
    are at most --dga-probe-budget of the training passes between updates."""
    from megatron_dga.mixing.probe_budget import auto_update_interval, probe_share

    # 6 sources, 1 probe micro batch, 2 training micro batches per iteration: 7 / 2 = 3.5 iterations'
    # worth of passes per update, 35 iterations for 10%, rounded up to 40 (8.75%).
    assert auto_update_interval(6, 1, 2, 0.1) == 40
    assert probe_share(6, 1, 2, 40) == pytest.approx(0.0875)
    assert auto_update_interval(16, 1, 32, 0.1) == 10  # a large batch: every 10 iterations costs 5%
    assert auto_update_interval(3, 1, 2, 0.1) == 20  # exactly at the budget fits
    assert auto_update_interval(6, 2, 2, 0.1) == 70
    assert auto_update_interval(6, 1, 2, 0.5) == 10
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="--dga-probe-budget"):
            auto_update_interval(6, 1, 2, bad)
    from megatron_dga.arguments import parse_args

    model = ["--mock-data", "--num-layers", "2", "--hidden-size", "8", "--num-attention-heads", "2", "--seq-length", "8"]
    with pytest.raises(SystemExit):
        parse_args([*model, "--dga-probe-budget", "0"])
    assert "--dga-probe-budget 0.0 must be a positive number" in capsys.readouterr().err
    assert parse_args(model).mixing.dga_update_interval is None  # derived when the run starts
    with pytest.raises(SystemExit):  # the budget would be ignored
        parse_args([*model, "--dga-probe-budget", "0.2", "--dga-update-interval", "10"])
    assert "give one of them" in capsys.readouterr().err


def test_build_mixing_derives_the_update_interval_from_the_batch_sizes():
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing

    names, tokens = [f"d{i}" for i in range(6)], [10] * 6
    notes = []
    auto = build_mixing(MixingConfig(mixing="dga"), names, tokens, notes=notes, microbatches=(2, 1))
    assert auto.hyper.update_interval == 40
    assert any("every 40 iterations" in n and "9%" in n and "--dga-probe-budget 0.1" in n for n in notes), notes
    tighter = build_mixing(MixingConfig(mixing="dga", dga_probe_budget=0.05), names, tokens, microbatches=(2, 1))
    assert tighter.hyper.update_interval == 70
    notes = []
    given = build_mixing(MixingConfig(mixing="dga", dga_update_interval=10), names, tokens, notes=notes,
                         microbatches=(2, 1))
    assert given.hyper.update_interval == 10 and not notes  # the flag, as given
    with pytest.raises(ValueError, match="--dga-update-interval"):
        build_mixing(MixingConfig(mixing="dga"), names, tokens)


def test_a_derived_update_interval_scales_the_step():
    """At a derived interval T_r, --dga-lr and --dga-step-clip are the step at 10 iterations, times
    sqrt(T_r / 10): the probe noise moves the weights as far per iteration as at 10. A given
    interval takes them as they are."""
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing
    from megatron_dga.mixing.probe_budget import step_factor

    assert step_factor(10) == 1.0 and step_factor(40) == 2.0 and step_factor(90) == pytest.approx(3.0)
    names, tokens = [f"d{i}" for i in range(6)], [10] * 6
    notes = []
    every_40 = build_mixing(MixingConfig(mixing="dga"), names, tokens, notes=notes, microbatches=(2, 1))
    assert (every_40.hyper.update_interval, every_40.hyper.lr, every_40.hyper.step_clip) == (40, 1.0, 2.0)
    assert any("2x --dga-lr and --dga-step-clip" in n for n in notes), notes
    chosen = build_mixing(MixingConfig(mixing="dga", dga_lr=0.3, dga_step_clip=0.5), names, tokens,
                          microbatches=(2, 1))
    assert (chosen.hyper.lr, chosen.hyper.step_clip) == (0.6, 1.0)
    notes = []
    every_10 = build_mixing(MixingConfig(mixing="dga"), [f"d{i}" for i in range(16)], [10] * 16, notes=notes,
                            microbatches=(32, 1))
    assert (every_10.hyper.update_interval, every_10.hyper.lr, every_10.hyper.step_clip) == (10, 0.5, 1.0)
    assert not any("--dga-step-clip" in n for n in notes), notes
    given = build_mixing(MixingConfig(mixing="dga", dga_update_interval=40), names, tokens, microbatches=(2, 1))
    assert (given.hyper.lr, given.hyper.step_clip) == (0.5, 1.0)


def test_a_derived_interval_above_10_starts_with_an_early_phase():
    """Above 10 iterations, the first third of the run updates every 10 on probes cut to 10 / T_r of
    training's sequences (the same cost), with the step as at 10; then every T_r with whole probes and
    the scaled step. Only where the probes may be cut and the run's length is known."""
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing
    from megatron_dga.mixing.probe_budget import EarlyPhase, ProbeCost, early_phase

    assert early_phase(40, 6, 8, 600, 1 / 3) == EarlyPhase(200, 10, 2)
    assert early_phase(10, 6, 8, 600, 1 / 3) is None  # nothing to cut at 10
    # 2 x 10 / 40 is no whole sequence: sources of 1, the specific set's 2, (6 + 2) / (7 x 2) of the cost: every 30
    assert early_phase(40, 6, 2, 600, 1 / 3) == EarlyPhase(200, 30, 1, specific_micro_batch_size=2)
    assert early_phase(40, 6, 8, 600, 0) is None and early_phase(40, 6, None, 600, 1 / 3) is None
    names, tokens = [f"d{i}" for i in range(6)], [10] * 6
    notes = []
    m = build_mixing(MixingConfig(mixing="dga"), names, tokens, notes=notes, microbatches=ProbeCost(2, 1, 8, 600))
    h = m.hyper
    assert (h.update_interval, h.lr, h.step_clip) == (40, 1.0, 2.0)
    assert (h.early_iters, h.early_interval, h.early_micro_batch_size, h.early_step) == (200, 10, 2, 0.5)
    assert any("every 10 iterations until iteration 200 (--dga-early-fraction 0.333), on probes of 2 of training's 8 "
               "sequences, then every 40 iterations, with steps of 2x" in n for n in notes), notes
    updates = [i for i in range(1, 601) if m.wants_update(i)]
    assert updates == [*range(10, 200, 10), *range(200, 601, 40)]
    assert m.probe_micro_batch_size(190) == 2 and m.probe_micro_batch_size(200) is None
    # The early step is the step at 10: half the scaled one, clip included.
    scores = np.array([4.0, 0.0, -4.0])
    early = dga_default(**{k: getattr(h, k) for k in ("lr", "step_clip", "early_iters", "early_step")},
                        score_ema=0.0, step_scale="none")
    late = dga_default(lr=h.lr, step_clip=h.step_clip, score_ema=0.0, step_scale="none")
    early.update(10, scores)
    late.update(10, scores)
    assert np.abs(early.last_step).max() == pytest.approx(1.0) and np.abs(late.last_step).max() == pytest.approx(2.0)
    off = build_mixing(MixingConfig(mixing="dga", dga_early_fraction=0.0), names, tokens,
                       microbatches=ProbeCost(2, 1, 8, 600))
    assert off.hyper.early_iters == 0 and [i for i in range(1, 81) if off.wants_update(i)] == [40, 80]
    uncut = build_mixing(MixingConfig(mixing="dga"), names, tokens, microbatches=(2, 1))
    assert uncut.hyper.early_iters == 0


def test_a_probe_too_small_to_cut_holds_one_sequence_and_runs_to_the_end_when_few_whole_updates_remain():
    """Large k at small batches (results-at-scale.md, large k): 17 probes against 2 micro batches of 8
    per iteration allow whole probes every 90 iterations, and 8 x 10 / 90 is no whole sequence. The cut
    probe then holds one sequence and comes every 20 iterations, at no more cost. Whole probes every 90
    would leave 2 updates after the first third of a 200-iteration run, too few to settle: the
    one-sequence probes then run to the end."""
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing
    from megatron_dga.mixing.probe_budget import EarlyPhase, ProbeCost, early_phase

    one = EarlyPhase(iters=200, interval=20, micro_batch_size=1, specific_micro_batch_size=8)
    assert early_phase(90, 16, 8, 200, 1 / 3) == one
    assert early_phase(90, 16, 8, 900, 1 / 3) == EarlyPhase(300, 20, 1, 8)  # 7 whole updates after the third
    assert early_phase(40, 6, 8, 200, 1 / 3) == EarlyPhase(70, 10, 2)  # 4 after it: as before
    assert early_phase(40, 6, 8, 120, 1 / 3) == EarlyPhase(40, 10, 2)  # 2 after it, on probes of 2: as before
    # 57 one-sequence probes and a specific one of 8 cost (57 + 8) / (58 x 8) of whole ones: every 50, not 40
    assert early_phase(290, 57, 8, 200, 1 / 3) == EarlyPhase(200, 50, 1, 8)
    assert early_phase(290, 57, 1, 200, 1 / 3) is None  # one sequence per micro batch: nothing to cut
    notes = []
    m = build_mixing(MixingConfig(mixing="dga"), [f"b{i}" for i in range(16)], [10] * 16, notes=notes,
                     microbatches=ProbeCost(2, 1, 8, 200))
    h = m.hyper
    assert (h.update_interval, h.early_iters, h.early_interval, h.early_micro_batch_size) == (90, 200, 20, 1)
    assert h.lr * h.early_step == pytest.approx(0.5 * 2 ** 0.5)  # the step at 20: sqrt(2) x the one at 10
    assert [i for i in range(1, 201) if m.wants_update(i)] == list(range(20, 200, 20))  # none at the end
    assert m.probe_micro_batch_size(180) == 1
    assert m.specific_probe_micro_batch_size(180) == 8  # every score shares it: it stays whole
    assert any("every 20 iterations on probes of 1 of training's 8 sequences (the specific set's of all 8), to the "
               "end of the run, with steps of 1.41421x --dga-lr and --dga-step-clip: whole probes (17 x 1 micro "
               "batches per rank) every 90 iterations would leave 2 updates after the first 0.333 of the run "
               "(--dga-early-fraction), too few. The probes add 8% to training's 2" in n for n in notes), notes
    # Over every one of 57 clusters, whole probes every 290: one-sequence probes every 50, not a refusal.
    every = build_mixing(MixingConfig(mixing="dga"), [f"c{i}" for i in range(57)], [1000] * 57,
                         microbatches=ProbeCost(2, 1, 8, 200))
    assert (every.hyper.early_iters, every.hyper.early_interval, every.hyper.early_micro_batch_size,
            every.hyper.early_specific_micro_batch_size) == (200, 50, 1, 8)
    # Probes cut to a sequence or more cut the specific set's alike, as measured.
    six = build_mixing(MixingConfig(mixing="dga"), [f"d{i}" for i in range(6)], [10] * 6,
                       microbatches=ProbeCost(2, 1, 8, 200))
    assert six.probe_micro_batch_size(60) == six.specific_probe_micro_batch_size(60) == 2
    assert six.specific_probe_micro_batch_size(80) is None


def test_the_one_sequence_phase_reads_one_sequences_tokens_as_prefixes_of_a_micro_batch():
    """Given training's sequence length, a source's probe of one sequence's tokens reads them as the
    prefixes of a micro batch of sequences: 8 prefixes of 16 tokens at 128 tokens and 8 sequences, at the
    same interval and cost as one whole sequence. Under sequence parallelism a prefix is a multiple of TP;
    where no prefix is that long, or a micro batch holds one sequence, the probe is one whole sequence.
    Probes cut to a sequence or more are not cut to prefixes. --no-dga-probe-prefixes probes whole ones."""
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing
    from megatron_dga.mixing.probe_budget import EarlyPhase, ProbeCost, early_phase, prefix_tokens

    assert early_phase(90, 16, 8, 200, 1 / 3, seq_length=128) == EarlyPhase(200, 20, 8, 8, sequence_tokens=16)
    assert early_phase(290, 57, 8, 200, 1 / 3, seq_length=128) == EarlyPhase(200, 50, 8, 8, sequence_tokens=16)
    assert early_phase(90, 16, 8, 200, 1 / 3, seq_length=20, token_multiple=2) == EarlyPhase(200, 20, 8, 8, 2)
    assert early_phase(90, 16, 8, 200, 1 / 3, seq_length=12, token_multiple=2) == EarlyPhase(200, 20, 1, 8)
    assert early_phase(40, 6, 8, 600, 1 / 3, seq_length=128) == EarlyPhase(200, 10, 2)  # 2 of 8: whole sequences
    assert prefix_tokens(128, 1) is None and prefix_tokens(None, 8) is None and prefix_tokens(4, 8) is None
    names, tokens = [f"b{i}" for i in range(16)], [10] * 16
    notes = []
    m = build_mixing(MixingConfig(mixing="dga"), names, tokens, notes=notes, microbatches=ProbeCost(2, 1, 8, 200, 128))
    assert [i for i in range(1, 201) if m.wants_update(i)] == list(range(20, 200, 20))  # as often as before
    assert (m.probe_micro_batch_size(180), m.specific_probe_micro_batch_size(180), m.probe_sequence_tokens(180)) \
        == (8, 8, 16)
    assert any("every 20 iterations on probes of training's 8 sequences cut to their first 16 of 128 tokens, one "
               "sequence's tokens (the specific set's of all 8), to the end of the run" in n and
               "The probes add 8% to training's 2" in n for n in notes), notes
    assert m.state_dict()["schedule"]["early"]["sequence_tokens"] == 16
    whole = build_mixing(MixingConfig(mixing="dga", dga_probe_prefixes=False), names, tokens,
                         microbatches=ProbeCost(2, 1, 8, 200, 128))
    assert (whole.probe_micro_batch_size(180), whole.probe_sequence_tokens(180)) == (1, None)
    assert "sequence_tokens" not in whole.state_dict()["schedule"]["early"]


def test_noise_shrink_by_hand():
    """Each centred score times tau^2 / (tau^2 + se_i^2), tau^2 = spread^2 - mean(se^2)."""
    scores, stderr = np.array([3.0, 0.0, -3.0]), np.array([1.0, 1.0, 3.0])
    m = dga(lr=1.0, noise_shrink=True)
    m.update(10, scores, stderr=stderr)
    spread = 1.4826 * 3.0  # the median absolute deviation of [3, 0, -3], as a standard deviation
    tau2 = spread ** 2 - np.mean(stderr ** 2)
    np.testing.assert_allclose(m.last_step, scores * tau2 / (tau2 + stderr ** 2), rtol=1e-4)
    # the well-measured source moves more than the noisy one with the same score
    assert m.last_step[0] > -m.last_step[2] > 0


def test_noise_shrink_moves_nothing_when_the_differences_are_within_the_noise():
    m = dga(lr=1.0, noise_shrink=True)
    assert m.update(10, [1.0, 0.0, -1.0], stderr=[5.0, 5.0, 5.0])
    np.testing.assert_allclose(m.weights(), [0.5, 0.3, 0.2], rtol=1e-12)
    n = dga(lr=1.0)  # without the flag the same measurement moves the weights
    n.update(10, [1.0, 0.0, -1.0], stderr=[5.0, 5.0, 5.0])
    assert not np.allclose(n.weights(), [0.5, 0.3, 0.2])


def test_noise_shrink_under_the_running_scale_keeps_the_scale_of_the_raw_scores():
    """The running scale is that of the measured scores: shrinking shortens the step, it does
    not rescale the next ones."""
    shrunk, plain = dga_default(noise_shrink=True), dga_default()
    shrunk.update(10, [2.0, 0.0, -2.0], stderr=[0.5, 0.5, 0.5])
    plain.update(10, [2.0, 0.0, -2.0], stderr=[0.5, 0.5, 0.5])
    assert shrunk.log_spreads == plain.log_spreads
    assert 0 < shrunk.last_step[0] < plain.last_step[0]


def test_a_resume_says_when_the_update_schedule_changed():
    """A derived interval and step follow the batch sizes per rank: resumed on another layout, a run
    can update on another schedule. The resumed mixing says so; the same schedule says nothing."""
    before = dga_default(update_interval=40, lr=1.0, step_clip=2.0)
    state = before.state_dict()
    same = dga_default(update_interval=40, lr=1.0, step_clip=2.0)
    same.load_state_dict(state)
    assert same.schedule_change is None
    other = dga_default(update_interval=20, lr=0.5 * 2 ** 0.5, step_clip=2 ** 0.5)
    other.load_state_dict(state)
    assert "every 40 iterations, step 1 and clip 2" in other.schedule_change
    assert "every 20 iterations, step 0.707 and clip 1.41" in other.schedule_change
    older = {key: value for key, value in state.items() if key != "schedule"}  # saved before it was recorded
    fresh = dga_default(update_interval=20)
    fresh.load_state_dict(older)
    assert fresh.schedule_change is None
    # Schedules that differ only in the specific set's probe name it.
    early = dict(update_interval=90, early_iters=200, early_interval=20, early_micro_batch_size=1)
    cut = dga_default(**early).state_dict()
    whole = dga_default(**early, early_specific_micro_batch_size=8)
    whole.load_state_dict(cut)
    assert "on probes of 1 sequences per rank, then" in whole.schedule_change
    assert "on probes of 1 sequences per rank (the specific set's of 8), then" in whole.schedule_change
    # A checkpoint of one whole sequence per source, resumed with prefixes, names both.
    prefixes = dga_default(**{**early, "early_micro_batch_size": 8}, early_specific_micro_batch_size=8,
                           early_sequence_tokens=16)
    prefixes.load_state_dict(whole.state_dict())
    assert "on probes of 1 sequences per rank (the specific set's of 8), then" in prefixes.schedule_change
    assert "on probes of 8 sequences per rank cut to their first 16 tokens (the specific set's of 8), then" \
        in prefixes.schedule_change


# ---- --dga-max-epochs: a bound on repetition ----------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=40).filter(lambda w: sum(w) > 0),
       st.lists(st.floats(0.01, 1.0), min_size=40, max_size=40))
def test_cap_to_ceiling_is_on_the_simplex_below_the_caps(weights, raw_caps):
    from megatron_dga.mixing.dga import cap_to_ceiling

    p = np.array(weights) / sum(weights)
    caps = np.array(raw_caps[:len(p)])
    if caps.sum() < 1:
        caps = caps / caps.sum()  # the least feasible: every weight at its cap
    q = cap_to_ceiling(p, caps)
    assert q.sum() == pytest.approx(1.0, rel=1e-9) and np.all(q <= caps * (1 + 1e-9))
    free = q < caps * (1 - 1e-9)  # the weights below their caps keep their ratios to each other
    if free.sum() >= 2 and np.all(p[free] > 1e-300):  # ratios of subnormal numbers are not exact
        ratio = q[free] / p[free]
        np.testing.assert_allclose(ratio, ratio[0], rtol=1e-9)
    if np.all(p <= caps):
        assert q is p  # nothing binds: the weights are left exactly as they were


def test_cap_to_ceiling_does_not_overflow_on_a_tiny_free_mass():
    # The free entries hold a subnormal mass: scaling the capped entry by room / mass too would
    # overflow (a warning, or an error under np.errstate(over="raise")), though it is then discarded.
    from megatron_dga.mixing.dga import cap_to_ceiling

    p = np.array([1.0, 1e-310])
    with np.errstate(all="raise"):
        q = cap_to_ceiling(p, np.array([0.5, 0.6]))
    np.testing.assert_allclose(q, [0.5, 0.5])


def test_max_domain_weights_bound_what_dga_samples_and_where_it_steps_from():
    # Domain "a" aligns best at every update; its cap of 0.3 holds, and the others share the rest
    # in the ratio the steps give them.
    capped = DGAMixing(NAMES, np.ones(3), hyperparameters(lr=1.0, ema=0.5), max_domain_weights=np.array([0.3, 1.0, 1.0]))
    free = DGAMixing(NAMES, np.ones(3), hyperparameters(lr=1.0, ema=0.5))
    for it in range(10, 110, 10):
        for m in (capped, free):
            m.update(it, [1.0, 0.5, 0.0])
    assert free.weights()[0] > 0.6
    w = capped.weights()
    assert w[0] == pytest.approx(0.3, rel=1e-9) and w.sum() == pytest.approx(1.0)
    assert w[1] > w[2]
    # The iterate itself is capped (a projection, as for the floor): a falling score takes "a"
    # below the cap at the next update, not after its excess log-weight has worn off.
    capped.update(110, [-1.0, 0.5, 0.0])
    assert capped.weights()[0] < 0.3 - 0.01


def test_a_cap_that_never_binds_changes_nothing():
    capped = DGAMixing(NAMES, np.array([0.5, 0.3, 0.2]), DGAHyperparameters(), max_domain_weights=np.ones(3) * 0.99)
    free = DGAMixing(NAMES, np.array([0.5, 0.3, 0.2]), DGAHyperparameters())
    rng = np.random.default_rng(0)
    for it in range(10, 200, 10):
        a = rng.normal(size=3)
        capped.update(it, a)
        free.update(it, a)
    np.testing.assert_array_equal(capped.weights(), free.weights())  # bit for bit


def test_max_epochs_caps_each_domain_by_its_sequences_and_the_runs_length(capsys):
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing, repetition_caps

    # 5,000 sequences in the run: 16 epochs of a domain of 100 sequences is a weight of 0.32;
    # the large domains are not bounded.
    np.testing.assert_allclose(repetition_caps(16, [100, 10_000, 20_000], 5_000), [0.32, 1.0, 1.0])
    # A run longer than 16 epochs of all the data: the least repetition the data allow, the
    # natural mixture, bounds every domain.
    np.testing.assert_allclose(repetition_caps(16, [100, 300], 100_000), [0.25, 0.75])
    assert repetition_caps(16, [10_000, 20_000], 5_000) is None  # nothing to bound
    assert repetition_caps(0, [100, 10_000], 5_000) is None  # 0: off

    names = ["small", "big", "bigger"]
    notes = []
    m = build_mixing(MixingConfig(mixing="dga", dga_update_interval=10), names, [12_800, 1_280_000, 2_560_000],
                     notes=notes, domain_sequences=[100, 10_000, 20_000], run_sequences=5_000)
    np.testing.assert_allclose(m.domain_caps, [0.32, 1.0, 1.0])
    assert any("--dga-max-epochs 16" in n and "small 0.32" in n for n in notes), notes
    many = [f"c{i}" for i in range(20)]
    notes = []
    build_mixing(MixingConfig(mixing="dga", dga_update_interval=10), many, [1280 * (i + 1) for i in range(20)],
                 notes=notes, domain_sequences=[10 * (i + 1) for i in range(20)], run_sequences=5_000)
    assert any(n.endswith("c0 0.032, c1 0.064, c2 0.096, c3 0.13, c4 0.16, c5 0.19, c6 0.22, c7 0.26 and 12 more")
               for n in notes), notes  # the tightest first, not thousands of them
    off = build_mixing(MixingConfig(mixing="dga", dga_update_interval=10, dga_max_epochs=0), names,
                       [12_800, 1_280_000, 2_560_000], domain_sequences=[100, 10_000, 20_000], run_sequences=5_000)
    assert off.domain_caps is None
    from megatron_dga.arguments import parse_args
    with pytest.raises(SystemExit):
        parse_args(["--domains-manifest", "x.json", "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads",
                    "2", "--seq-length", "32", "--mixing", "dga", "--specific-data-path", "s", "--dga-max-epochs", "-1"])
    assert "--dga-max-epochs -1.0 must be a number >= 0" in capsys.readouterr().err


def test_a_derived_interval_the_run_never_reaches_is_refused():
    """57 sources and the specific set against 2 training micro batches per iteration, on probes that
    cannot be cut (pipeline parallelism): at the default budget one update every 290 iterations, which
    a run of 200 never reaches. DGA would be uniform
    sampling under another name, so the run is refused with what to change."""
    from megatron_dga.config import MixingConfig
    from megatron_dga.mixing.factory import build_mixing
    from megatron_dga.mixing.probe_budget import ProbeCost

    names, tokens = [f"c{i}" for i in range(57)], [1000] * 57
    with pytest.raises(ValueError, match="every 290 iterations.*--train-iters 200.*--dga-probe-budget"):
        build_mixing(MixingConfig(mixing="dga"), names, tokens, microbatches=ProbeCost(2, 1, None, 200))
    longer = build_mixing(MixingConfig(mixing="dga"), names, tokens, microbatches=ProbeCost(2, 1, None, 300))
    assert longer.hyper.update_interval == 290
    by_hand = build_mixing(MixingConfig(mixing="dga", dga_update_interval=50), names, tokens,
                           microbatches=ProbeCost(2, 1, None, 200))
    assert by_hand.hyper.update_interval == 50
