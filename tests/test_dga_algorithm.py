"""The DGA update rule: a hand-computed example, the floor, non-finite alignment, invariants."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megatron_dga.mixing.dga import DGAHyperparameters, DGAMixing, exponentiated_gradient_step

NAMES = ["a", "b", "c"]


def dga(initial=(0.5, 0.3, 0.2), **hyper):
    return DGAMixing(NAMES, np.array(initial), DGAHyperparameters(**hyper))


def test_exponentiated_gradient_step_by_hand():
    # softmax(log [.5, .3, .2] + 0.5 * [1, 0, -1]) = [.5 e^.5, .3, .2 e^-.5] / their sum
    step = exponentiated_gradient_step(np.array([0.5, 0.3, 0.2]), np.array([1.0, 0.0, -1.0]), 0.5)
    np.testing.assert_allclose(step, [0.6617826348067233, 0.24083487484541197, 0.09738249034786482], rtol=1e-12)


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
    np.testing.assert_allclose(m.state, [0.6617826348067233, 0.24083487484541197, 0.09738249034786482], rtol=1e-12)
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


def test_state_round_trip():
    m = dga(lr=0.7, ema=0.3)
    m.update(10, [0.2, -0.1, 0.4])
    n = dga(lr=0.7, ema=0.3)
    n.load_state_dict(m.state_dict())
    m.update(20, [0.5, 0.1, -0.3])
    n.update(20, [0.5, 0.1, -0.3])
    np.testing.assert_array_equal(m.weights(), n.weights())


def test_base_distributions_mix_domains():
    bases = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    m = DGAMixing(NAMES, np.array([0.5, 0.5]), DGAHyperparameters(lr=1.0, ema=0.0), base_distributions=bases)
    np.testing.assert_allclose(m.weights(), [0.5, 0.25, 0.25])
    m.update(10, [0.0, 1.0])
    w_bases = np.array([1.0, np.e]) / (1 + np.e)
    np.testing.assert_allclose(m.weights(), w_bases @ bases, rtol=1e-12)
    assert set(m.log_values()["alignment"]) == {"base_0", "base_1"}


@settings(max_examples=200, deadline=None)
@given(
    initial=st.lists(st.floats(1e-6, 1.0), min_size=2, max_size=8),
    steps=st.lists(st.lists(st.one_of(st.floats(-1e6, 1e6), st.sampled_from([np.nan, np.inf, -np.inf])),
                                   min_size=8, max_size=8),
                   max_size=6),
    lr=st.floats(0.0, 100.0),
    ema=st.floats(0.0, 0.99),
    mode=st.sampled_from(["state", "sampling"]),
    floor=st.floats(0.0, 0.1),
)
def test_weights_stay_finite_on_the_simplex(initial, steps, lr, ema, mode, floor):
    k = len(initial)
    names = [f"d{i}" for i in range(k)]
    floor = min(floor, 0.9 / k)
    m = DGAMixing(names, np.array(initial), DGAHyperparameters(lr=lr, ema=ema, ema_mode=mode, min_weight=floor))
    for t, step in enumerate(steps, start=1):
        m.update(t * 10, step[:k])
        w = m.weights()
        assert np.all(np.isfinite(w)) and abs(w.sum() - 1.0) < 1e-9
        assert w.min() >= floor - 1e-12


def test_bad_hyperparameters_are_refused():
    with pytest.raises(ValueError, match="--dga-ema"):
        dga(ema=1.0)
    with pytest.raises(ValueError, match="--dga-min-weight"):
        dga(min_weight=0.5)
    with pytest.raises(ValueError, match="--dga-update-interval"):
        dga(update_interval=0)
