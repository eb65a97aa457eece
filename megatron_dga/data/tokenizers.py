"""Tokenizers under their Megatron names, all usable offline.

`build_tokenizer(tokenizer_type, tokenizer_model)` maps the `--tokenizer-type` and
`--tokenizer-model` flags to one of:

- `GPT2BPETokenizer`: GPT-2 BPE (tiktoken's `r50k_base`) from the ranks file shipped in
  `megatron_dga/data/assets/gpt2.tiktoken`; takes no model file. vocab_size 50257, eod 50256.
- `TikTokenizer`: any tiktoken ranks file (`<base64 token> <rank>` per line). Assumptions: text
  is split with the GPT-2 regex before BPE (pass `pattern=` to use another one), and
  `<|endoftext|>` is the only special token, with id `max(rank) + 1`; so vocab_size is
  `max(rank) + 2`. For r50k this is exactly tiktoken's GPT-2 encoding.
- `HuggingFaceTokenizer`: a local `tokenizer.json` (HF `tokenizers`), or a folder holding one;
  no hub access. See `HuggingFaceTokenizer` for how its end-of-document token is found.

Every tokenizer treats special-token text inside a document (such as a literal
"<|endoftext|>") as ordinary text, and adds no BOS/EOS itself: the only end-of-document ids in
a dataset are the ones preprocessing appends.
"""

from __future__ import annotations

import hashlib
import json
import os
from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Sequence

from megatron_dga.data.manifest import TokenizerInfo

ENDOFTEXT = "<|endoftext|>"

# The pre-tokenization regex of GPT-2 (tiktoken's r50k_base / gpt2 encodings).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

GPT2_RANKS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gpt2.tiktoken")
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# Tried in this order when a tokenizer.json does not say which token ends a document.
EOD_CANDIDATES = (ENDOFTEXT, "<|end_of_text|>", "</s>", "<eos>")


def sha256_of_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Tokenizer(ABC):
    """What preprocessing and training need from a tokenizer."""

    name: str  # the --tokenizer-type value that builds it

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Largest token id + 1 (special tokens included)."""

    @property
    @abstractmethod
    def eod(self) -> int:
        """End-of-document id, appended by preprocessing with --append-eod."""

    @property
    @abstractmethod
    def model(self) -> Optional[str]:
        """The --tokenizer-model value that rebuilds this tokenizer (absolute), or None."""

    @property
    def model_file(self) -> Optional[str]:
        """The file the vocabulary was read from (to fingerprint it)."""
        return self.model

    @abstractmethod
    def tokenize(self, text: str) -> List[int]: ...

    @abstractmethod
    def detokenize(self, ids: Sequence[int]) -> str: ...

    def info(self) -> TokenizerInfo:
        """The manifest's description of this tokenizer."""
        return TokenizerInfo(type=self.name, model=self.model, vocab_size=self.vocab_size, eod=self.eod)


class TikTokenizer(Tokenizer):
    """BPE from a tiktoken ranks file (see the module docstring for its assumptions)."""

    name = "TikTokenizer"

    def __init__(self, ranks_file: str, pattern: str = GPT2_PATTERN, expected_sha256: Optional[str] = None):
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        if not os.path.isfile(ranks_file):
            raise FileNotFoundError(f"tiktoken ranks file not found: {ranks_file} (--tokenizer-model)")
        actual = sha256_of_file(ranks_file)
        if expected_sha256 is not None and actual != expected_sha256:
            raise ValueError(
                f"{ranks_file}: sha256 {actual} does not match the expected {expected_sha256}; "
                "the file is corrupted or not the one this tokenizer was written for"
            )
        # tiktoken caches local files under a key made of the path only; passing the content's
        # hash makes it drop a stale cached copy when the file at that path has changed.
        ranks = load_tiktoken_bpe(ranks_file, expected_hash=actual)
        if not ranks:
            raise ValueError(f"{ranks_file}: empty tiktoken ranks file")
        self._ranks_file = os.path.abspath(ranks_file)
        self._eod = max(ranks.values()) + 1
        self._encoding = tiktoken.Encoding(
            name=os.path.basename(ranks_file),
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens={ENDOFTEXT: self._eod},
        )

    @property
    def vocab_size(self) -> int:
        return self._encoding.n_vocab

    @property
    def encoding(self):
        """The tiktoken Encoding (its ranks, pattern and special tokens)."""
        return self._encoding

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def model(self) -> Optional[str]:
        return self._ranks_file

    def tokenize(self, text: str) -> List[int]:
        # encode_ordinary: a literal "<|endoftext|>" in a document stays text, not an eod
        return self._encoding.encode_ordinary(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._encoding.decode(list(ids))


class GPT2BPETokenizer(TikTokenizer):
    """GPT-2 BPE from the packaged r50k ranks file, checked against its known sha256."""

    name = "GPT2BPETokenizer"

    def __init__(self):
        super().__init__(GPT2_RANKS_FILE, GPT2_PATTERN, expected_sha256=GPT2_RANKS_SHA256)

    @property
    def model(self) -> Optional[str]:
        return None  # packaged: nothing to pass as --tokenizer-model

    @property
    def model_file(self) -> Optional[str]:
        return GPT2_RANKS_FILE


class HuggingFaceTokenizer(Tokenizer):
    """A local HF `tokenizers` file: `tokenizer.json`, or a folder holding one.

    The end-of-document token is, in this order: the `eos_token` of a `tokenizer_config.json`
    beside the tokenizer.json; else the first of EOD_CANDIDATES (`<|endoftext|>`,
    `<|end_of_text|>`, `</s>`, `<eos>`) in the vocabulary; else building it is an error.
    """

    name = "HuggingFaceTokenizer"

    def __init__(self, path: str):
        from tokenizers import Tokenizer as HFTokenizer

        tokenizer_file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
        if not os.path.isfile(tokenizer_file):
            where = f"folder {path} holds no tokenizer.json" if os.path.isdir(path) else f"{path} not found"
            raise FileNotFoundError(f"HuggingFace tokenizer: {where} (--tokenizer-model)")
        try:
            self._tokenizer = HFTokenizer.from_file(tokenizer_file)
        except Exception as e:  # the library raises a bare Exception on malformed files
            raise ValueError(f"{tokenizer_file}: not a HuggingFace tokenizer.json ({e})") from None
        # Special-token text inside a document stays text, as with TikTokenizer.
        self._tokenizer.encode_special_tokens = True
        self._path = os.path.abspath(path)
        self._tokenizer_file = os.path.abspath(tokenizer_file)
        vocab = self._tokenizer.get_vocab(with_added_tokens=True)
        self._vocab_size = max(vocab.values()) + 1
        self._eod = self._find_eod(vocab)

    def _find_eod(self, vocab: Dict[str, int]) -> int:
        configured = _configured_eos_token(
            os.path.join(os.path.dirname(self._tokenizer_file), "tokenizer_config.json")
        )
        if configured is not None and configured in vocab:
            return vocab[configured]
        for token in EOD_CANDIDATES:
            if token in vocab:
                return vocab[token]
        raise ValueError(
            f"{self._tokenizer_file}: no end-of-document token; expected one of "
            f"{', '.join(EOD_CANDIDATES)} in the vocabulary, or an eos_token in a "
            "tokenizer_config.json beside it"
        )

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eod(self) -> int:
        return self._eod

    @property
    def model(self) -> Optional[str]:
        return self._path

    @property
    def model_file(self) -> Optional[str]:
        return self._tokenizer_file

    def tokenize(self, text: str) -> List[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


def _configured_eos_token(config_file: str) -> Optional[str]:
    """`eos_token` of a transformers tokenizer_config.json (a string or {"content": ...})."""
    if not os.path.isfile(config_file):
        return None
    try:
        with open(config_file, encoding="utf-8") as f:
            eos = json.load(f).get("eos_token")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(eos, dict):
        eos = eos.get("content")
    return eos if isinstance(eos, str) else None


TOKENIZER_TYPES = ("GPT2BPETokenizer", "HuggingFaceTokenizer", "TikTokenizer")


def build_tokenizer(tokenizer_type: str, tokenizer_model: Optional[str] = None) -> Tokenizer:
    """The tokenizer named by --tokenizer-type, read from --tokenizer-model where it needs one."""
    if tokenizer_type == "GPT2BPETokenizer":
        if tokenizer_model is not None:
            raise ValueError(
                "--tokenizer-type GPT2BPETokenizer uses its packaged ranks file and takes no "
                "--tokenizer-model (use TikTokenizer for another ranks file)"
            )
        return GPT2BPETokenizer()
    if tokenizer_type in ("HuggingFaceTokenizer", "TikTokenizer"):
        if not tokenizer_model:
            what = (
                "a tokenizer.json or a folder holding one"
                if tokenizer_type == "HuggingFaceTokenizer"
                else "a tiktoken ranks file"
            )
            raise ValueError(f"--tokenizer-type {tokenizer_type} needs --tokenizer-model ({what})")
        if tokenizer_type == "HuggingFaceTokenizer":
            return HuggingFaceTokenizer(tokenizer_model)
        return TikTokenizer(tokenizer_model)
    raise ValueError(
        f"unknown --tokenizer-type {tokenizer_type!r}; choose one of {', '.join(TOKENIZER_TYPES)}"
    )
