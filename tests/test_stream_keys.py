"""Every random stream has its own key: training, cap and specific streams never share a
permutation (DGA's probes read ahead in the training streams). NumPy's SeedSequence ignores trailing zeros, so (seed, i, 1, 0) and
(seed, i, 1) are the same seed: keys of different lengths can collide."""

import numpy as np

from megatron_dga.config import DataConfig
from megatron_dga.data.domains import cap_seed_key, open_domains, open_specific_sets
from pretrain_helpers import make_domains, synthetic_documents, write_domain

EPOCHS = 4


def seed_state(key):
    return tuple(np.random.SeedSequence(list(key)).generate_state(4).tolist())


def test_no_two_streams_share_a_seed(tmp_path):
    manifest = make_domains(str(tmp_path), num_domains=3)
    specific = str(tmp_path / "specific_text_document")
    write_domain(specific, synthetic_documents(np.random.default_rng(0), (0, 200), 20))
    seed = 1234
    data = DataConfig(domains_manifest=manifest, split="100,0,0", domain_max_tokens=2000,
                      specific_data_path=specific, specific_train_samples=4)
    domains, _, _ = open_domains(data, seq_length=16, seed=seed)
    specific_train, _ = open_specific_sets(data, seq_length=16, seed=seed)

    keys = {}  # seed state -> what uses it
    def add(name, key):
        state = seed_state(key)
        assert state not in keys, f"{name} uses the same seed as {keys[state]}: {key}"
        keys[state] = name

    for i, d in enumerate(domains):
        add(f"cap {i}", cap_seed_key(seed, i))
        for e in range(EPOCHS):
            add(f"train {i} epoch {e}", d.train.epoch_key(e))
    for e in range(EPOCHS):
        add(f"specific epoch {e}", specific_train.stream.epoch_key(e))
        add(f"specific examples pass {e}", specific_train.epoch_key(e))
    assert len(keys) == 3 * (1 + EPOCHS) + 2 * EPOCHS


def test_streams_draw_from_their_keys(tmp_path):
    """The keys above are the ones the streams shuffle with."""
    manifest = make_domains(str(tmp_path), num_domains=2)
    domains, _, _ = open_domains(DataConfig(domains_manifest=manifest, split="100,0,0"), seq_length=16, seed=7)
    for stream in (domains[0].train, domains[1].train):
        doc_order, _, _ = stream._epoch_index(2)
        expected = np.random.default_rng(list(stream.epoch_key(2))).permutation(stream.doc_ids)
        np.testing.assert_array_equal(doc_order, expected)
