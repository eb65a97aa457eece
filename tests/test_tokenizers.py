"""Tokenizers by Megatron name, offline, and the byte-level BPE trainer."""

import base64
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from megatron_dga.data.tokenizers import (  # noqa: E402
    GPT2_RANKS_FILE,
    GPT2_RANKS_SHA256,
    GPT2BPETokenizer,
    HuggingFaceTokenizer,
    TikTokenizer,
    TokenizerError,
    build_tokenizer,
)
from megatron_dga.files import sha256_of_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_word_level(path, words, special=("<|endoftext|>",)):
    """A real HF tokenizer.json whose ids are the word positions (specials after the words)."""
    vocab = {w: i for i, w in enumerate(words)}
    for token in special:
        vocab[token] = len(vocab)
    tok = HFTokenizer(models.WordLevel(vocab, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return vocab


# --- GPT2BPETokenizer -------------------------------------------------------------------


def test_gpt2_known_ids_and_sizes():
    tok = build_tokenizer("GPT2BPETokenizer")
    assert isinstance(tok, GPT2BPETokenizer)
    assert tok.tokenize("Hello world!") == [15496, 995, 0]
    assert (tok.vocab_size, tok.eod) == (50257, 50256)
    assert tok.detokenize([15496, 995, 0]) == "Hello world!"
    info = tok.info()
    assert (info.type, info.model, info.vocab_size, info.eod) == ("GPT2BPETokenizer", None, 50257, 50256)


def test_gpt2_literal_special_token_text_is_not_eod():
    tok = build_tokenizer("GPT2BPETokenizer")
    ids = tok.tokenize("a<|endoftext|>b")
    assert tok.eod not in ids
    assert tok.detokenize(ids) == "a<|endoftext|>b"


def test_packaged_ranks_file_matches_recorded_sha256():
    assert sha256_of_file(GPT2_RANKS_FILE) == GPT2_RANKS_SHA256
    assert os.path.getsize(GPT2_RANKS_FILE) == 835554


def test_corrupted_ranks_file_is_refused(tmp_path):
    bad = tmp_path / "gpt2.tiktoken"
    shutil.copy(GPT2_RANKS_FILE, bad)
    with open(bad, "ab") as f:
        f.write(base64.b64encode(b"extra") + b" 50256\n")
    with pytest.raises(ValueError, match="sha256"):
        TikTokenizer(str(bad), expected_sha256=GPT2_RANKS_SHA256)


def test_gpt2_takes_no_model_file():
    with pytest.raises(ValueError, match="--tokenizer-model"):
        build_tokenizer("GPT2BPETokenizer", "some.tiktoken")


# --- TikTokenizer -----------------------------------------------------------------------


def test_tiktokenizer_on_gpt2_ranks_equals_gpt2():
    tok = build_tokenizer("TikTokenizer", GPT2_RANKS_FILE)
    assert tok.tokenize("Hello world!") == [15496, 995, 0]
    assert (tok.vocab_size, tok.eod, tok.model) == (50257, 50256, GPT2_RANKS_FILE)


def test_tiktokenizer_eod_follows_the_last_rank(tmp_path):
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"ab"] = 256
    ranks[b"abab"] = 257
    path = tmp_path / "tiny.tiktoken"
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    tok = build_tokenizer("TikTokenizer", str(path))
    assert (tok.eod, tok.vocab_size) == (258, 259)
    assert tok.tokenize("abab ab") == [257, 32, 256]


def test_tiktokenizer_reads_a_changed_file_at_the_same_path(tmp_path):
    # tiktoken caches local files by path; the content hash must win over a stale copy
    path = tmp_path / "r.tiktoken"
    ranks = {bytes([b]): b for b in range(256)}
    path.write_bytes(b"".join(base64.b64encode(t) + b" %d\n" % r for t, r in ranks.items()))
    assert build_tokenizer("TikTokenizer", str(path)).vocab_size == 257
    with open(path, "ab") as f:
        f.write(base64.b64encode(b"xy") + b" 256\n")
    assert build_tokenizer("TikTokenizer", str(path)).vocab_size == 258


# --- HuggingFaceTokenizer ---------------------------------------------------------------


def test_hf_tokenizer_from_file_or_folder(tmp_path):
    vocab = write_word_level(tmp_path / "tokenizer.json", ["<unk>", "hello", "world"])
    for model in (tmp_path / "tokenizer.json", tmp_path):
        tok = build_tokenizer("HuggingFaceTokenizer", str(model))
        assert isinstance(tok, HuggingFaceTokenizer)
        assert tok.tokenize("hello world") == [1, 2]
        assert tok.eod == vocab["<|endoftext|>"] == 3
        assert tok.vocab_size == 4
        assert tok.model == str(model)


def test_hf_eod_prefers_the_configured_eos_token(tmp_path):
    write_word_level(tmp_path / "tokenizer.json", ["<unk>", "x"], special=("<|endoftext|>", "</s>"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}}))
    assert build_tokenizer("HuggingFaceTokenizer", str(tmp_path)).eod == 3


def test_hf_eod_falls_back_to_known_names(tmp_path):
    write_word_level(tmp_path / "tokenizer.json", ["<unk>", "x"], special=("</s>",))
    assert build_tokenizer("HuggingFaceTokenizer", str(tmp_path)).eod == 2


def test_hf_without_eod_token_is_an_error_naming_the_file(tmp_path):
    write_word_level(tmp_path / "tokenizer.json", ["<unk>", "x"], special=())
    with pytest.raises(ValueError, match=r"tokenizer\.json: no end-of-document token"):
        build_tokenizer("HuggingFaceTokenizer", str(tmp_path))


# --- errors -----------------------------------------------------------------------------


def test_unknown_type_names_the_flag_and_choices():
    with pytest.raises(ValueError, match=r"unknown --tokenizer-type 'BertWordPiece'.*GPT2BPETokenizer"):
        build_tokenizer("BertWordPiece")


@pytest.mark.parametrize("tokenizer_type", ["HuggingFaceTokenizer", "TikTokenizer"])
def test_missing_model_flag(tokenizer_type):
    with pytest.raises(ValueError, match=f"--tokenizer-type {tokenizer_type} needs --tokenizer-model"):
        build_tokenizer(tokenizer_type)


@pytest.mark.parametrize("tokenizer_type", ["HuggingFaceTokenizer", "TikTokenizer"])
def test_missing_model_file_names_file_and_flag(tmp_path, tokenizer_type):
    missing = str(tmp_path / "nope.json")
    with pytest.raises(TokenizerError, match=rf"{missing}.*(--tokenizer-model|no such file)"):
        build_tokenizer(tokenizer_type, missing)


def test_folder_without_tokenizer_json(tmp_path):
    with pytest.raises(TokenizerError, match="holds no tokenizer.json"):
        build_tokenizer("HuggingFaceTokenizer", str(tmp_path))


# --- tools/train_tokenizer.py -----------------------------------------------------------


@pytest.fixture
def corpus(tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "return", "def", "lambda", "print", "value", "index"]
    lines = []
    for i in range(300):
        text = " ".join(words[(i * 7 + j * 3) % len(words)] + str(j % 5) for j in range(30))
        lines.append(json.dumps({"text": f"{text}\n(x{i}) = {i * i};"}))
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_train_tokenizer_is_deterministic_and_loadable(tmp_path, corpus):
    tool = load_tool("train_tokenizer")
    argv = ["--input", str(corpus), "--vocab-size", "400", "--no-progress", "--output"]
    assert tool.main(argv + [str(tmp_path / "a")]) == 0
    assert tool.main(argv + [str(tmp_path / "b.json")]) == 0
    # a separate process too: hash-map seeds differ between processes
    subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_tokenizer.py"), *argv, str(tmp_path / "c")],
        check=True, capture_output=True,
    )
    first = (tmp_path / "a" / "tokenizer.json").read_bytes()
    assert (tmp_path / "b.json").read_bytes() == first
    assert (tmp_path / "c" / "tokenizer.json").read_bytes() == first

    tok = build_tokenizer("HuggingFaceTokenizer", str(tmp_path / "a"))
    assert tok.vocab_size == 400
    assert tok.eod == 0  # the only special token comes first
    text = "gamma3 delta4 (x17) = 289;\n  ünïcode ✓"
    ids = tok.tokenize(text)
    assert tok.eod not in ids
    assert tok.detokenize(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned


def test_train_tokenizer_reports_bad_lines(tmp_path, corpus, capsys):
    with open(corpus, "a") as f:
        f.write('{"text": "unterminated\n')
    tool = load_tool("train_tokenizer")
    argv = ["--input", str(corpus), "--vocab-size", "300", "--no-progress", "--output", str(tmp_path / "t")]
    assert tool.main(argv) == 1
    assert f"{corpus}:301: invalid JSON" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert tool.main(argv + ["--skip-bad-lines"]) == 0
    assert "skipped lines: 1 (1 invalid JSON)" in capsys.readouterr().out


# --- Megatron's other tokenizer types ---------------------------------------------------------

TEXTS = ["It is a truth universally acknowledged, that a single man in possession of a good fortune",
         "must be in want of a wife. However little known the feelings or views of such a man may be"] * 20


@pytest.fixture(scope="module")
def sentencepiece_model(tmp_path_factory):
    import sentencepiece

    folder = tmp_path_factory.mktemp("spm")
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS), model_prefix=str(folder / "tokenizer"),
                                            vocab_size=50, bos_id=1, eos_id=2, unk_id=0, pad_id=-1)
    return str(folder / "tokenizer.model")


@pytest.mark.parametrize("kind", ["SentencePieceTokenizer", "GPTSentencePieceTokenizer", "Llama2Tokenizer"])
def test_sentencepiece_tokenizers(sentencepiece_model, kind):
    tokenizer = build_tokenizer(kind, sentencepiece_model)
    ids = tokenizer.tokenize(TEXTS[0])
    assert tokenizer.eod == 2 and tokenizer.vocab_size == 50 and tokenizer.name == kind
    if kind == "Llama2Tokenizer":  # as Megatron's: every document starts with bos
        assert ids[0] == 1 and tokenizer.detokenize(ids[1:]) == TEXTS[0]
    else:
        assert ids[0] != 1 and tokenizer.detokenize(ids) == TEXTS[0]


def test_a_huggingface_folder_with_a_sentencepiece_model(sentencepiece_model):
    folder = os.path.dirname(sentencepiece_model)
    tokenizer = build_tokenizer("HuggingFaceTokenizer", folder)
    assert tokenizer.detokenize(tokenizer.tokenize(TEXTS[1])) == TEXTS[1] and tokenizer.eod == 2


def test_gpt2_bpe_from_vocab_and_merge_files(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    trained = ByteLevelBPETokenizer()
    trained.train_from_iterator(TEXTS, vocab_size=300, special_tokens=["<|endoftext|>"])
    vocab_file, merge_file = trained.save_model(str(tmp_path))
    tokenizer = build_tokenizer("GPT2BPETokenizer", vocab_file=vocab_file, merge_file=merge_file)
    assert tokenizer.detokenize(tokenizer.tokenize(TEXTS[0])) == TEXTS[0]
    assert tokenizer.eod == trained.token_to_id("<|endoftext|>")
    with pytest.raises(TokenizerError, match="give both --vocab-file and --merge-file"):
        build_tokenizer("GPT2BPETokenizer", vocab_file=vocab_file)


def test_null_tokenizer_is_megatrons():
    tokenizer = build_tokenizer("NullTokenizer", vocab_size=100)
    assert tokenizer.tokenize("5 17 99") == [5, 17, 99] and tokenizer.detokenize([5, 17]) == "5 17"
    assert (tokenizer.vocab_size, tokenizer.eod) == (101, 100)
    with pytest.raises(TokenizerError, match="NullTokenizer needs --vocab-size"):
        build_tokenizer("NullTokenizer")


def test_a_hub_name_is_refused_clearly():
    with pytest.raises(TokenizerError, match="meta-llama/Llama-3-8B: no such file or folder .* nothing is downloaded"):
        build_tokenizer("HuggingFaceTokenizer", "meta-llama/Llama-3-8B")
