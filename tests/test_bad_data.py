"""Bad training data gets a clear error naming the file (and the document, where it applies),
before training starts or at the batch that reads it, never a crash deep inside torch."""

import json
import os
import shutil

import numpy as np
import pytest

from megatron_dga.config import DataConfig
from megatron_dga.data.domains import open_domains, open_specific_sets, parse_data_path
from megatron_dga.data.errors import DataError
from pretrain_helpers import EOD, SMALL_MODEL, make_domains, pretrain, synthetic_documents, write_domain


def domains_config(manifest, **extra):
    return DataConfig(domains_manifest=manifest, split="100,0,0", **extra)


def test_truncated_bin(tmp_path):
    manifest = make_domains(str(tmp_path))
    prefix = str(tmp_path / "dom1_text_document")
    size = os.path.getsize(prefix + ".bin")
    with open(prefix + ".bin", "r+b") as f:
        f.truncate(size - 10)
    with pytest.raises(DataError, match=f"{prefix}.bin is truncated: {size - 10} bytes, but {prefix}.idx describes {size}"):
        open_domains(domains_config(manifest), seq_length=16, seed=1)


def test_idx_of_another_bin(tmp_path):
    manifest = make_domains(str(tmp_path))
    shutil.copy(tmp_path / "dom0_text_document.idx", tmp_path / "dom2_text_document.idx")
    with pytest.raises(DataError, match="dom2_text_document.bin .* and .*dom2_text_document.idx .* do not belong together"):
        open_domains(domains_config(manifest), seq_length=16, seed=1)


def test_token_id_beyond_the_vocabulary(tmp_path):
    manifest = make_domains(str(tmp_path))
    domains, _, _ = open_domains(domains_config(manifest), seq_length=16, seed=1)
    stream = domains[2].train
    stream.vocab_size = 100  # domain 2 holds ids from 170 up
    with pytest.raises(DataError, match=r"domain 'dom2' \(.*dom2_text_document.bin\), document \d+ holds token id \d+, "
                                        r"not below the model's vocabulary size 100"):
        stream.sample(0)


def test_manifest_tokenizer_differs_from_the_datasets(tmp_path):
    manifest = make_domains(str(tmp_path))
    stamp = {"source": {"tokenizer": {"type": "GPT2BPETokenizer", "vocab_size": 50257, "eod": 50256}}}
    (tmp_path / "dom1_text_document.source.json").write_text(json.dumps(stamp))
    with pytest.raises(DataError, match="dom1_text_document: built with tokenizer GPT2BPETokenizer .*vocabulary "
                                        "50257.* but .*domains.json says synthetic .*vocabulary 256"):
        open_domains(domains_config(manifest), seq_length=16, seed=1)


def test_domain_smaller_than_one_sequence(tmp_path):
    manifest = make_domains(str(tmp_path))
    write_domain(str(tmp_path / "dom1_text_document"), [np.array([1, 2, 3, EOD])])
    with pytest.raises(DataError, match=r"domain 'dom1' has 4 tokens in 1 documents, fewer than one sequence of 17 "
                                        r"tokens \(.*dom1_text_document.bin"):
        open_domains(domains_config(manifest), seq_length=16, seed=1)


def test_empty_specific_set(tmp_path):
    prefix = str(tmp_path / "specific_text_document")
    write_domain(prefix, [])
    with pytest.raises(DataError, match=f"--specific-data-path: {prefix}.bin is empty: no documents"):
        open_specific_sets(DataConfig(specific_data_path=prefix), seq_length=16, seed=1)


@pytest.mark.parametrize("data_path,message", [
    (["0.5", "a", "x", "b"], "weight 'x' \\(of prefix 'b'\\) is not a number"),
    (["0.5", "a", "0.5"], "3 items"),
    (["a", "0.5", "b"], "'0.5' looks like a weight, but the first item 'a' is not a number"),
    (["nan", "a"], "weight nan of prefix 'a' must be a finite number"),
])
def test_data_path_weights_that_are_not_numbers(data_path, message):
    with pytest.raises(DataError, match=message):
        parse_data_path(data_path)


def test_a_bad_token_in_training_stops_at_its_batch(tmp_path):
    """End to end: a domain holds ids beyond the vocabulary its manifest declares (256)."""
    manifest = make_domains(str(tmp_path))
    documents = synthetic_documents(np.random.default_rng(0), (0, 100), 20)
    for document in documents:
        document[5] = 300
    write_domain(str(tmp_path / "dom1_text_document"), documents)
    result = pretrain(["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "4",
                       "--train-iters", "20", "--split", "100,0,0", "--mixing", "uniform"], expect_ok=False)
    assert result.returncode == 2, result.stderr
    assert "dom1_text_document.bin), document" in result.stderr
    assert "holds token id 300, not below the model's vocabulary size 256" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_garbage_idx_is_named(tmp_path):
    manifest = make_domains(str(tmp_path))
    (tmp_path / "dom1_text_document.idx").write_bytes(b"this is not an index" * 10)
    with pytest.raises(DataError, match=r"domain 'dom1': cannot read indexed dataset .*dom1_text_document.idx: "
                                        r"not a Megatron index"):
        open_domains(domains_config(manifest), seq_length=16, seed=1)


@pytest.mark.parametrize("split", ["0,0,0", "a,b", "-1,2,0"])
def test_a_bad_split_is_named(tmp_path, split):
    manifest = make_domains(str(tmp_path))
    with pytest.raises(DataError, match=f"--split {split!r}: expected up to three non-negative numbers"):
        open_domains(DataConfig(domains_manifest=manifest, split=split), seq_length=16, seed=1)
