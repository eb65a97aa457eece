"""The blend at the scale DGA runs: thousands of domains, weights that change every update.

Every domain's draws must stay within 1 of its integrated target (the sum of its weight over
the positions so far), whatever the weights do, and the blend's state must not grow with the
number of updates.
"""

import pickle

import numpy as np

from megatron_dga.data.blend import DynamicBlend
from megatron_dga.mixing.dga import DGAHyperparameters, DGAMixing


def dga_like_weights(rng, k, updates, step=0.5):
    """A multiplicative random walk, as exponentiated-gradient steps produce: weights spread
    over several orders of magnitude and reorder at every update."""
    logits = rng.normal(0.0, 2.0, k)
    for _ in range(updates):
        logits += rng.normal(0.0, step, k)
        w = np.exp(logits - logits.max())
        yield w / w.sum()


def replay(blend, weight_sequence, positions_per_update):
    """Drive the blend as the trainer does; return the worst under- and over-draw seen at any
    position, measured against the integral of the weights in effect."""
    k = blend.num_domains
    target = np.zeros(k)  # integral of the weights over the positions so far
    position, worst_under, worst_over = 0, 0.0, 0.0
    for weights in weight_sequence:
        blend.set_weights(position, weights)
        w = blend.weights
        domains, draws = blend.lookup(position, position + positions_per_update)
        # Within the segment, a domain's deficit (target - draws) grows until its next pick
        # and drops by 1 at it: its extremes are just before and just after its picks. Before
        # the pick at offset q, that is its j-th draw, the deficit is target + w q - j; after
        # it, target + w (q + 1) - (j + 1).
        before = blend.draws_before(position)
        offsets = np.arange(positions_per_update)
        reach = target[domains] - draws
        worst_under = max(worst_under, float((reach + w[domains] * offsets).max()))
        worst_over = max(worst_over, float(-(reach + w[domains] * (offsets + 1) - 1).max()))
        # Draw numbers continue each domain's count.
        np.testing.assert_array_equal(draws - before[domains], _occurrence_index(domains))
        position += positions_per_update
        target += w * positions_per_update
        end = target - blend.draws_before(position)
        worst_under = max(worst_under, float(end.max()))
        worst_over = max(worst_over, float(-end.min()))
        blend.release_before(position)
    return worst_under, worst_over


def _occurrence_index(domains):
    """For each position, how many times its domain appeared earlier in the array."""
    order = np.argsort(domains, kind="stable")
    sorted_domains = domains[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_domains)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(domains)]))
    index = np.empty_like(domains)
    index[order] = np.arange(len(domains)) - run_start
    return index


def test_draws_stay_within_one_of_the_integrated_target():
    k, updates, per_update = 1024, 1000, 320
    rng = np.random.default_rng(0)
    blend = DynamicBlend(k, np.full(k, 1.0 / k))
    under, over = replay(blend, dga_like_weights(rng, k, updates), per_update)
    assert under <= 1.0 and over <= 1.0, (under, over)


def test_weights_below_one_sample_per_update_are_still_sampled():
    # 512 domains share 1% of the weight: each expects one sample every ~100 updates of 512
    # positions. A blend that restarts its rule at every change never samples them.
    k, per_update, updates = 1024, 512, 400
    w = np.r_[np.full(512, 0.99 / 512), np.full(512, 0.01 / 512)]
    rng = np.random.default_rng(1)
    blend = DynamicBlend(k, w)
    position = 0
    for _ in range(updates):
        jitter = w * np.exp(rng.normal(0, 0.01, k))  # a change at every update, same ranking
        blend.set_weights(position, jitter / jitter.sum())
        blend.lookup(position, position + per_update)
        position += per_update
        blend.release_before(position)
    draws = blend.draws_before(position)
    expected = w * position
    assert np.all(np.abs(draws - expected) <= 1.5)
    assert np.all(draws[512:] >= 1)


def drawn_domains_over_bases(min_domain_weight):
    """DGA over 16 base distributions of 179 clusters, as in the large-k experiment: each base
    weights its clusters by their tokens, so a tiny cluster in a large group has a share of a
    few parts per million. 20 updates of 320 positions (200 iterations of 32 sequences)."""
    rng = np.random.default_rng(2)
    k, num_bases, per_update, updates = 179, 16, 320, 20
    tokens = rng.lognormal(8.0, 1.0, k)
    tokens[0] = tokens.max() * 1e-5
    group = np.arange(k) % num_bases
    bases = np.stack([np.where(group == j, tokens, 0.0) for j in range(num_bases)])
    hyper = DGAHyperparameters(min_weight=0.01, min_domain_weight=min_domain_weight)
    mixing = DGAMixing([f"c{i}" for i in range(k)], np.full(num_bases, 1 / num_bases), hyper,
                       base_distributions=bases)
    blend = DynamicBlend(k, mixing.weights())
    position = 0
    for u in range(1, updates + 1):
        blend.set_weights(position, mixing.weights())
        blend.lookup(position, position + per_update)
        position += per_update
        blend.release_before(position)
        mixing.update(u * 10, rng.normal(0.0, 1.0, num_bases))
    return blend.draws_before(position) > 0, position


def test_a_domain_floor_samples_every_cluster_under_base_distributions():
    drawn, positions = drawn_domains_over_bases(0.0)
    assert not drawn[0]  # the source floor does not reach a cluster's share in its base
    drawn, positions = drawn_domains_over_bases(2.0 / positions)  # an integral of 2 samples or more
    assert drawn.all()


def test_state_does_not_grow_with_updates():
    k = 256
    rng = np.random.default_rng(2)
    sizes = {}
    blend = DynamicBlend(k, np.full(k, 1.0 / k))
    position = 0
    for u, weights in enumerate(dga_like_weights(rng, k, 1000), start=1):
        blend.set_weights(position, weights)
        blend.lookup(position, position + 64)
        position += 64
        blend.release_before(position)
        if u in (10, 1000):
            sizes[u] = len(pickle.dumps(blend.state_dict()))
    assert sizes[1000] <= sizes[10] * 1.05, sizes


def test_resume_at_any_position_plans_the_same():
    k = 64
    rng = np.random.default_rng(3)
    weights = list(dga_like_weights(rng, k, 30))

    def drive(stop_at=None):
        blend = DynamicBlend(k, np.full(k, 1.0 / k))
        position, plan = 0, []
        for u, w in enumerate(weights):
            blend.set_weights(position, w)
            for _ in range(3):  # three iterations of 40 positions per update
                if stop_at == (u, _):
                    state = pickle.loads(pickle.dumps(blend.state_dict()))
                    blend = DynamicBlend(k, np.full(k, 1.0 / k))
                    blend.load_state_dict(state)
                plan.append(blend.lookup(position, position + 40))
                position += 40
                blend.release_before(position)
        return plan

    straight = drive()
    for stop in [(0, 0), (0, 1), (7, 2), (29, 1)]:
        resumed = drive(stop)
        for a, b in zip(straight, resumed):
            np.testing.assert_array_equal(a[0], b[0])
            np.testing.assert_array_equal(a[1], b[1])
