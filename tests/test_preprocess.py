"""tools/preprocess_data.py: JSONL -> megatron-core indexed dataset, read back by megatron-core."""

import glob
import importlib.util
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from megatron_dga.data import preprocess as preprocess_module
from megatron_dga.data.preprocess import DocumentEncoder, dataset_prefix, preprocess
from megatron_dga.data.tokenizers import build_tokenizer

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # Transformer Engine / Apex absent
    from megatron.core.datasets.indexed_dataset import IndexedDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.path.join(REPO, "tools", "preprocess_data.py")

TEXTS = [
    "Hello world!",
    "def add(a, b):\n    return a + b\n",
    "Ünïcödé text, emoji 🚀 and\ttabs.",
    "A literal <|endoftext|> stays text.",
    "x" * 3000,
]


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jsonl(path, texts, key="text"):
    with open(path, "w", encoding="utf-8") as f:
        for text in texts:
            f.write(json.dumps({key: text, "meta": 1}) + "\n")
    return str(path)


def many_texts(n):
    return [f"document {i}: " + " ".join(f"w{(i * j) % 97}" for j in range(i % 40 + 1)) for i in range(n)]


def read_back(prefix):
    dataset = IndexedDataset(prefix)
    return dataset, [dataset[i].tolist() for i in range(len(dataset))]


@pytest.fixture
def small_batches(monkeypatch):
    """Many batches from a small input, to exercise ordering across workers."""
    monkeypatch.setattr(preprocess_module, "BATCH_DOCS", 7)


@pytest.fixture(scope="module")
def gpt2():
    return build_tokenizer("GPT2BPETokenizer")


# --- round trip -------------------------------------------------------------------------


@pytest.mark.parametrize("append_eod", [True, False])
def test_round_trip_gpt2(tmp_path, gpt2, append_eod):
    src = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    result = preprocess(src, str(tmp_path / "out"), "GPT2BPETokenizer", append_eod=append_eod, progress=False)
    assert result.prefix == str(tmp_path / "out_text_document")

    dataset, docs = read_back(result.prefix)
    expected = [gpt2.tokenize(t) + ([gpt2.eod] if append_eod else []) for t in TEXTS]
    assert docs == expected
    assert dataset.index.dtype == np.uint16
    assert dataset.document_indices.tolist() == list(range(len(TEXTS) + 1))
    assert dataset.sequence_lengths.tolist() == [len(e) for e in expected]
    assert (result.documents, result.tokens) == (len(TEXTS), sum(map(len, expected)))
    assert [d[-1] == gpt2.eod for d in docs] == [append_eod] * len(TEXTS)
    assert gpt2.detokenize(docs[2][: len(docs[2]) - append_eod]) == TEXTS[2]


def test_large_vocabulary_switches_to_int32(tmp_path):
    # a real HF tokenizer.json with 70,000 words: ids above 65535 need int32
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    vocab["<|endoftext|>"] = 70_000
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))

    src = write_jsonl(tmp_path / "in.jsonl", ["w1 w65535 w69999", "w65536", "w7 w8"])
    result = preprocess(
        src, str(tmp_path / "big"), "HuggingFaceTokenizer", str(tmp_path), append_eod=True, progress=False
    )
    dataset, docs = read_back(result.prefix)
    assert result.dtype == "int32" and dataset.index.dtype == np.int32
    assert docs == [[1, 65535, 69999, 70000], [65536, 70000], [7, 8, 70000]]


def test_small_vocabulary_stays_uint16(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(100)}
    vocab["<|endoftext|>"] = 100
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    src = write_jsonl(tmp_path / "in.jsonl", ["w99 w3"])
    result = preprocess(src, str(tmp_path / "small"), "HuggingFaceTokenizer", str(tmp_path), progress=False)
    dataset, docs = read_back(result.prefix)
    assert dataset.index.dtype == np.uint16 and docs == [[99, 3]]


def test_json_key_names_the_output(tmp_path, gpt2):
    src = write_jsonl(tmp_path / "in.jsonl", ["Hello world!"], key="content")
    result = preprocess(src, str(tmp_path / "p"), "GPT2BPETokenizer", json_key="content", progress=False)
    assert result.prefix == dataset_prefix(str(tmp_path / "p"), "content")
    assert result.prefix == str(tmp_path / "p_content_document")
    assert read_back(result.prefix)[1] == [[15496, 995, 0]]


def test_compressed_input(tmp_path, gpt2):
    import lzma

    with lzma.open(tmp_path / "in.jsonl.xz", "wt") as f:
        f.write(json.dumps({"text": "Hello world!"}) + "\n")
    src = str(tmp_path / "in.jsonl.xz")
    result = preprocess(src, str(tmp_path / "xz"), "GPT2BPETokenizer", progress=False)
    assert read_back(result.prefix)[1] == [[15496, 995, 0]]


def test_encoder_keeps_megatron_rule_for_empty_documents(gpt2):
    tokens, lengths = DocumentEncoder(gpt2, True, np.uint16).encode_batch(["Hello world!", ""])
    assert lengths.tolist() == [4, 0] and tokens.tolist() == [15496, 995, 0, 50256]


# --- workers ----------------------------------------------------------------------------


def test_output_bytes_do_not_depend_on_workers(tmp_path, small_batches):
    src = write_jsonl(tmp_path / "in.jsonl", many_texts(200))
    contents = []
    for workers in (1, 2, 3):
        prefix = preprocess(src, str(tmp_path / f"w{workers}"), "GPT2BPETokenizer", append_eod=True,
                            workers=workers, progress=False).prefix
        contents.append((open(prefix + ".bin", "rb").read(), open(prefix + ".idx", "rb").read()))
    assert contents[0] == contents[1] == contents[2]
    assert len(IndexedDataset(str(tmp_path / "w2_text_document"))) == 200


def test_cli_in_a_subprocess_matches_the_library(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", TEXTS)
    out = subprocess.run(
        [sys.executable, TOOL, "--input", src, "--output-prefix", str(tmp_path / "cli"),
         "--tokenizer-type", "GPT2BPETokenizer", "--append-eod", "--workers", "2"],
        capture_output=True, text=True, check=True,
    )
    assert f"{len(TEXTS)} documents" in out.stdout
    assert "tokens/s" in out.stderr  # the progress bar
    lib = preprocess(src, str(tmp_path / "lib"), "GPT2BPETokenizer", append_eod=True, progress=False).prefix
    for ext in (".bin", ".idx"):
        assert open(str(tmp_path / "cli_text_document") + ext, "rb").read() == open(lib + ext, "rb").read()


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        load_tool("preprocess_data").main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--input", "--output-prefix", "--tokenizer-type", "--tokenizer-model", "--json-keys",
                 "--append-eod", "--workers", "--skip-bad-lines", "--no-progress"):
        assert flag in text


# --- bad input --------------------------------------------------------------------------

BAD_LINES = {
    "invalid JSON": b'{"text": "no end\n',
    "missing key": b'{"body": "wrong key"}\n',
    "invalid UTF-8": b'{"text": "caf\xe9"}\n',
    "empty text": b'{"text": "   "}\n',
}


def write_with_bad_line(path, bad, good_before=3, good_after=1):
    with open(path, "wb") as f:
        for i in range(good_before):
            f.write(json.dumps({"text": f"good {i}"}).encode() + b"\n")
        f.write(bad)
        for i in range(good_after):
            f.write(json.dumps({"text": f"after {i}"}).encode() + b"\n")
    return str(path)


@pytest.mark.parametrize("reason", sorted(BAD_LINES))
def test_bad_line_is_an_error_with_file_and_line(tmp_path, capsys, reason):
    src = write_with_bad_line(tmp_path / "in.jsonl", BAD_LINES[reason])
    code = load_tool("preprocess_data").main(
        ["--input", src, "--output-prefix", str(tmp_path / "out"), "--tokenizer-type", "GPT2BPETokenizer",
         "--no-progress"]
    )
    assert code == 1
    assert f"error: {src}:4: {reason}" in capsys.readouterr().err
    assert os.listdir(tmp_path) == ["in.jsonl"]


def test_skip_bad_lines_counts_by_reason(tmp_path, capsys, gpt2):
    src = str(tmp_path / "in.jsonl")
    with open(src, "wb") as f:
        f.write(b'{"text": "first"}\n')
        for bad in BAD_LINES.values():
            f.write(bad)
        f.write(BAD_LINES["missing key"])
        f.write(b"\n")  # blank lines are neither documents nor errors
        f.write(b'{"text": "last"}\n')
    code = load_tool("preprocess_data").main(
        ["--input", src, "--output-prefix", str(tmp_path / "out"), "--tokenizer-type", "GPT2BPETokenizer",
         "--skip-bad-lines", "--no-progress"]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "2 documents" in out
    assert ("skipped lines: 5 (1 empty text under key 'text', 1 invalid JSON, 1 invalid UTF-8, "
            "2 missing key 'text')") in out
    docs = read_back(str(tmp_path / "out_text_document"))[1]
    assert docs == [gpt2.tokenize("first"), gpt2.tokenize("last")]


def test_missing_input_is_a_clear_error(tmp_path, capsys):
    code = load_tool("preprocess_data").main(
        ["--input", str(tmp_path / "nope.jsonl"), "--output-prefix", str(tmp_path / "o"),
         "--tokenizer-type", "GPT2BPETokenizer"]
    )
    assert code == 1
    assert f"--input {tmp_path / 'nope.jsonl'}: file not found" in capsys.readouterr().err


# --- nothing half-written ---------------------------------------------------------------


def dataset_files(tmp_path, name):
    return sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / f"{name}_text_document*")))


@pytest.mark.parametrize("workers", [1, 2])
def test_failure_near_the_end_leaves_nothing_and_keeps_the_old_dataset(tmp_path, small_batches, workers):
    good = write_jsonl(tmp_path / "good.jsonl", many_texts(30))
    old = preprocess(good, str(tmp_path / "p"), "GPT2BPETokenizer", append_eod=True, progress=False).prefix
    old_bytes = [open(old + ext, "rb").read() for ext in (".bin", ".idx")]

    bad = write_with_bad_line(tmp_path / "bad.jsonl", BAD_LINES["invalid JSON"], good_before=100)
    with pytest.raises(ValueError, match=r"bad\.jsonl:101: invalid JSON"):
        preprocess(bad, str(tmp_path / "p"), "GPT2BPETokenizer", workers=workers, progress=False)
    with pytest.raises(ValueError, match=r"bad\.jsonl:101: invalid JSON"):
        preprocess(bad, str(tmp_path / "fresh"), "GPT2BPETokenizer", workers=workers, progress=False)

    assert dataset_files(tmp_path, "fresh") == []
    assert dataset_files(tmp_path, "p") == ["p_text_document.bin", "p_text_document.idx"]
    assert [open(old + ext, "rb").read() for ext in (".bin", ".idx")] == old_bytes


def test_interrupt_mid_run_leaves_no_temporary_files(tmp_path, small_batches, monkeypatch):
    calls = {"n": 0}
    encode = DocumentEncoder.encode_batch

    def interrupted(self, texts):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return encode(self, texts)

    monkeypatch.setattr(DocumentEncoder, "encode_batch", interrupted)
    src = write_jsonl(tmp_path / "in.jsonl", many_texts(50))
    with pytest.raises(KeyboardInterrupt):
        preprocess(src, str(tmp_path / "p"), "GPT2BPETokenizer", progress=False)
    assert dataset_files(tmp_path, "p") == []


def test_a_dead_worker_fails_the_run_instead_of_hanging(tmp_path, small_batches, monkeypatch):
    from concurrent.futures.process import BrokenProcessPool

    parent = os.getpid()
    encode = DocumentEncoder.encode_batch

    def dies_in_a_worker(self, texts):
        if os.getpid() != parent:
            os._exit(1)  # as if killed by the OOM killer
        return encode(self, texts)

    monkeypatch.setattr(DocumentEncoder, "encode_batch", dies_in_a_worker)
    src = write_jsonl(tmp_path / "in.jsonl", many_texts(50))
    with pytest.raises(BrokenProcessPool):
        preprocess(src, str(tmp_path / "p"), "GPT2BPETokenizer", workers=2, progress=False)
    assert dataset_files(tmp_path, "p") == []


def test_dtype_threshold_is_megatrons():
    assert preprocess_module.dataset_dtype(65499) == np.uint16
    assert preprocess_module.dataset_dtype(65500) == np.int32


def test_a_new_run_replaces_a_previous_dataset(tmp_path, gpt2):
    for texts in (["first version"], ["second", "version"]):
        src = write_jsonl(tmp_path / "in.jsonl", texts)
        prefix = preprocess(src, str(tmp_path / "p"), "GPT2BPETokenizer", progress=False).prefix
    assert read_back(prefix)[1] == [gpt2.tokenize("second"), gpt2.tokenize("version")]
    assert dataset_files(tmp_path, "p") == ["p_text_document.bin", "p_text_document.idx"]


def test_an_input_without_documents_is_an_error(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n" + BAD_LINES["missing key"])
    with pytest.raises(ValueError, match=r"in\.jsonl: no documents to write \(bad lines skipped: 1\)"):
        preprocess(str(src), str(tmp_path / "p"), "GPT2BPETokenizer", skip_bad_lines=True, progress=False)
    assert dataset_files(tmp_path, "p") == []
