"""tools/build_domains.py: a folder of per-domain JSONL -> indexed datasets + domains.json."""

import gzip
import importlib.util
import json
import lzma
import os
import warnings

import pytest

from megatron_dga.data.manifest import DomainsManifest
from megatron_dga.data.tokenizers import build_tokenizer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Transformer Engine / Apex absent
    from megatron.core.datasets.indexed_dataset import IndexedDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DOMAINS = {
    "code": ["def f(x):\n    return x * 2\n", "for i in range(3):\n    print(i)\n"],
    "prose": ["The quick brown fox.", "Jumps over the lazy dog.", "Hello world!"],
    "web": ["<html><body>hi</body></html>"],
}


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lines(texts):
    return "".join(json.dumps({"text": t}) + "\n" for t in texts)


@pytest.fixture
def input_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    (d / "code.jsonl").write_text(lines(DOMAINS["code"]))
    with gzip.open(d / "prose.jsonl.gz", "wt") as f:
        f.write(lines(DOMAINS["prose"]))
    with lzma.open(d / "web.jsonl.xz", "wt") as f:
        f.write(lines(DOMAINS["web"]))
    (d / "notes.txt").write_text("not a domain")
    return d


def run(input_dir, output_dir, *extra):
    argv = ["--input-dir", str(input_dir), "--output-dir", str(output_dir),
            "--tokenizer-type", "GPT2BPETokenizer", "--no-progress", *extra]
    return load_tool("build_domains").main(argv)


def test_builds_every_domain_and_a_readable_manifest(tmp_path, input_dir):
    out = tmp_path / "data"
    assert run(input_dir, out, "--workers", "2") == 0

    manifest = DomainsManifest.load(str(out / "domains.json"))
    gpt2 = build_tokenizer("GPT2BPETokenizer")
    expected_tokenizer = {"type": "GPT2BPETokenizer", "model": None, "vocab_size": 50257, "eod": 50256}
    assert vars(manifest.tokenizer) == expected_tokenizer
    assert manifest.names == ["code", "prose", "web"]
    for entry in manifest.domains:
        assert entry.prefix == f"{entry.name}_text_document"  # relative: the folder can move
        dataset = IndexedDataset(manifest.resolve_prefix(entry))
        expected = [gpt2.tokenize(t) + [gpt2.eod] for t in DOMAINS[entry.name]]  # eod on by default
        assert [dataset[i].tolist() for i in range(len(dataset))] == expected
        assert entry.documents == len(expected)
        assert entry.tokens == sum(map(len, expected))


def test_second_run_reuses_unchanged_domains(tmp_path, input_dir, capsys):
    out = tmp_path / "data"
    assert run(input_dir, out) == 0
    before = {n: os.stat(out / f"{n}_text_document.bin").st_mtime_ns for n in DOMAINS}
    manifest_before = (out / "domains.json").read_text()
    capsys.readouterr()

    assert run(input_dir, out) == 0
    assert capsys.readouterr().out.count("unchanged, reusing") == 3
    assert {n: os.stat(out / f"{n}_text_document.bin").st_mtime_ns for n in DOMAINS} == before
    assert (out / "domains.json").read_text() == manifest_before

    # a changed input is rebuilt, the others are not
    with open(input_dir / "code.jsonl", "a") as f:
        f.write(lines(["x = 1"]))
    assert run(input_dir, out) == 0
    printed = capsys.readouterr().out
    assert "code: built" in printed and printed.count("unchanged, reusing") == 2
    assert DomainsManifest.load(str(out / "domains.json")).domains[0].documents == 3

    # so is every domain when a setting that changes the bytes changes
    assert run(input_dir, out, "--no-append-eod") == 0
    assert capsys.readouterr().out.count("built") == 3
    manifest = DomainsManifest.load(str(out / "domains.json"))
    assert manifest.domains[2].tokens == len(build_tokenizer("GPT2BPETokenizer").tokenize(DOMAINS["web"][0]))


def test_domains_subset_and_unknown_domain(tmp_path, input_dir, capsys):
    out = tmp_path / "data"
    assert run(input_dir, out, "--domains", "web,code") == 0
    assert DomainsManifest.load(str(out / "domains.json")).names == ["web", "code"]
    assert not (out / "prose_text_document.bin").exists()

    assert run(input_dir, out, "--domains", "code,math") == 1
    assert "--domains: no input for math; found code, prose, web" in capsys.readouterr().err


def test_bad_line_names_file_and_line_and_skip_flag(tmp_path, input_dir, capsys):
    with open(input_dir / "code.jsonl", "a") as f:
        f.write('{"text": ""}\n')
    out = tmp_path / "data"
    assert run(input_dir, out) == 1
    assert f"{input_dir / 'code.jsonl'}:3: empty text" in capsys.readouterr().err
    assert not (out / "domains.json").exists()

    assert run(input_dir, out, "--skip-bad-lines") == 0
    assert "skipped 1 lines (1 empty text under key 'text')" in capsys.readouterr().out
    assert DomainsManifest.load(str(out / "domains.json")).domains[0].documents == 2


def test_input_dir_errors(tmp_path, capsys):
    assert run(tmp_path / "missing", tmp_path / "o") == 1
    assert "folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(tmp_path / "empty", tmp_path / "o") == 1
    assert "no <domain>.jsonl" in capsys.readouterr().err
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "a.jsonl").write_text(lines(["x"]))
    (tmp_path / "two" / "a.jsonl.gz").write_bytes(gzip.compress(lines(["x"]).encode()))
    assert run(tmp_path / "two", tmp_path / "o") == 1
    assert "domain 'a' has two inputs" in capsys.readouterr().err
