"""Probes of a base distribution follow that distribution over updates, and resume exactly."""

import numpy as np

from megatron_dga.mixing.probes import ProbeData
from megatron_dga.parallel.layout import Layout


def probe_data(bases):
    # 2 micro batches of 2 sequences per source and update, on one rank.
    return ProbeData([None] * bases.shape[1], None, bases, Layout(1, 1, 1, 1, 2, 2), 0, 2, None, False)


def planned_domains(probes, updates):
    blocks = []
    for _ in range(updates):
        probes.begin_update()
        blocks.append(probes._plan[0].copy())
        probes.end_update()
    return np.stack(blocks)  # [update, source, sequence]


def test_every_domain_of_a_base_is_probed_in_proportion():
    k = 50
    rng = np.random.default_rng(0)
    bases = rng.dirichlet(np.full(k, 0.5), size=3)
    probes = probe_data(bases)
    blocks = planned_domains(probes, 200)  # 800 sequences per base
    for j in range(3):
        counts = np.bincount(blocks[:, j].reshape(-1), minlength=k)
        np.testing.assert_array_less(np.abs(counts - 800 * bases[j]), 1.0 + 1e-9)
    # Not the same top domains at every update.
    assert len({tuple(b) for b in blocks[:, 0]}) > 10


def test_one_hot_bases_need_no_state_and_probe_their_domain():
    probes = probe_data(np.eye(4))
    blocks = planned_domains(probes, 3)
    assert np.all(blocks == np.arange(4)[None, :, None])
    assert probes.state_dict()["base_samplers"] == [None] * 4
    np.testing.assert_array_equal(probes.domain_draws, [12, 12, 12, 12])


def test_resumed_probes_plan_the_same_sequences():
    bases = np.random.default_rng(1).dirichlet(np.ones(20), size=2)
    straight = probe_data(bases)
    first = planned_domains(straight, 5)
    state = straight.state_dict()
    expected = planned_domains(straight, 5)
    resumed = probe_data(bases)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(planned_domains(resumed, 5), expected)
    assert not np.array_equal(first, expected)


class Numbered:
    """A stream whose k-th draw is the sequence [k, k, ...]: a probe's draw numbers show."""

    def sample(self, k):
        return np.full(5, k, dtype=np.int64)


def probed_draws(probes, training_draws):
    probes.begin_update(np.asarray(training_draws))
    draws = [sorted(set(mb.tokens[:, 0].tolist()) | set(mb.labels[:, -1].tolist()))
             for j in range(probes.num_sources) for mb in probes.source_microbatches(j)]
    probes.end_update()
    return draws


def test_probes_read_ahead_of_training_and_never_twice():
    """A probe reads what the domain's next training step would: the sequences just after the
    domain's training draws so far; and when training has not moved on (a domain of small
    weight), the next update reads further ahead instead of the same sequences again."""
    probes = ProbeData([Numbered(), Numbered()], None, np.eye(2), Layout(1, 1, 1, 1, 2, 2), 0, 1, None, False)
    assert probed_draws(probes, [10, 0]) == [[10, 11], [0, 1]]
    assert probed_draws(probes, [10, 0]) == [[12, 13], [2, 3]]  # not the same sequences again
    assert probed_draws(probes, [40, 3]) == [[40, 41], [4, 5]]  # training has passed the cursor
    np.testing.assert_array_equal(probes.state_dict()["domain_draws"], [42, 6])


def test_an_update_may_probe_fewer_sequences():
    """An early phase's update probes micro batches of fewer sequences than training's; the streams
    move on by what it read, and the next update reads whole micro batches again."""
    probes = ProbeData([Numbered(), Numbered()], Numbered(), np.eye(2), Layout(1, 1, 1, 1, 4, 4), 0, 1, None, False)
    probes.begin_update(np.asarray([0, 0]), micro_batch_size=1)
    assert [mb.tokens.shape[0] for j in range(2) for mb in probes.source_microbatches(j)] == [1, 1]
    assert probes.specific_microbatches()[0].tokens.shape[0] == 1
    probes.end_update()
    assert probes.state_dict()["domain_draws"] == [1, 1] and probes.state_dict()["specific_draws"] == 1
    assert probed_draws(probes, [0, 0]) == [[1, 2, 3, 4], [1, 2, 3, 4]]  # whole again, from where it stopped


def test_an_update_may_probe_the_specific_set_whole_beside_one_sequence_sources():
    """In the one-sequence phase the sources' probes hold one sequence and the specific set's keeps
    training's micro batch (every score shares its gradient); its stream moves on by what it read."""
    probes = ProbeData([Numbered(), Numbered()], Numbered(), np.eye(2), Layout(1, 1, 1, 1, 4, 4), 0, 1, None, False)
    probes.begin_update(np.asarray([0, 0]), micro_batch_size=1, specific_micro_batch_size=4)
    assert [mb.tokens.shape[0] for j in range(2) for mb in probes.source_microbatches(j)] == [1, 1]
    specific = probes.specific_microbatches()
    assert [mb.tokens.shape[0] for mb in specific] == [4] and specific[0].tokens[:, 0].tolist() == [0, 1, 2, 3]
    probes.end_update()
    assert probes.state_dict()["domain_draws"] == [1, 1] and probes.state_dict()["specific_draws"] == 4
    probes.begin_update(np.asarray([0, 0]), micro_batch_size=1)  # not given: cut alike, as before
    assert [mb.tokens[:, 0].tolist() for mb in probes.specific_microbatches()] == [[4]]
    probes.end_update()
    assert probes.state_dict()["specific_draws"] == 5


class Counted:
    """A stream whose k-th draw is [k, k + 1, ..., k + 8]: 8 tokens and their labels."""

    def sample(self, k):
        return np.arange(k, k + 9, dtype=np.int64)


def test_an_update_may_probe_the_sources_on_prefixes_of_a_micro_batch():
    """In the one-sequence phase, with prefixes, each source's probe reads training's micro batch of
    sequences cut to their first tokens (4 sequences of 2 tokens: one 8-token sequence's tokens), its
    labels shifted by one; the specific set's stays whole; the next update is whole again, from where
    the cursors stopped."""
    probes = ProbeData([Counted(), Counted()], Counted(), np.eye(2), Layout(1, 1, 1, 1, 4, 4), 0, 1, None, False)
    probes.begin_update(np.asarray([0, 10]), micro_batch_size=4, specific_micro_batch_size=4, sequence_tokens=2)
    first = probes.source_microbatches(1)
    assert len(first) == 1 and first[0].tokens.tolist() == [[10, 11], [11, 12], [12, 13], [13, 14]]
    assert first[0].labels.tolist() == [[11, 12], [12, 13], [13, 14], [14, 15]]
    assert probes.specific_microbatches()[0].tokens.shape == (4, 8)
    probes.end_update()
    assert probes.state_dict()["domain_draws"] == [4, 14] and probes.state_dict()["specific_draws"] == 4
    probes.begin_update(np.asarray([0, 10]))
    assert [mb.tokens.shape for j in range(2) for mb in probes.source_microbatches(j)] == [(4, 8), (4, 8)]
