"""Tokenizers under their Megatron names, all usable offline.

`build_tokenizer(tokenizer_type, tokenizer_model)` maps the `--tokenizer-type` and
`--tokenizer-model` flags to one of:

- `GPT2BPETokenizer`: GPT-2 BPE (tiktoken's `r50k_base`) from the ranks file shipped in
  `megatron_dga/data/assets/gpt2.tiktoken`; takes no model file. vocab_size 50257, eod 50256.
- `TikTokenizer`: any tiktoken ranks file (`<base64 token> <rank>` per line). Assumptions: text
  is split with the GPT-2 regex before BPE (pass `pattern=` to use another one), and
  `<|endoftext|>` is the only special token, with id `max(rank) + 1`; so vocab_size is
  `max(rank) + 2`. For r50k this is exactly tiktoken's GPT-2 encoding.
- `HuggingFaceTokenizer`: a local `tokenizer.json` (HF `tokenizers`), or a folder holding one
  (or, failing that, a sentencepiece `tokenizer.model`); no hub access. See
  `HuggingFaceTokenizer` for how its end-of-document token is found.
- `GPT2BPETokenizer` with `--vocab-file vocab.json --merge-file merges.txt` (Megatron's GPT
  examples): the byte-level BPE of those files (HF `tokenizers`).
- `SentencePieceTokenizer`, `GPTSentencePieceTokenizer`, `Llama2Tokenizer`: a sentencepiece
  model (`--tokenizer-model`); end of document is its eos. As Megatron's, `Llama2Tokenizer`
  starts every document with bos.
- `NullTokenizer`: Megatron's: a text is its token ids written out, separated by spaces;
  `--vocab-size` ids, the end of document one more.

Every tokenizer treats special-token text inside a document (such as a literal
"<|endoftext|>") as ordinary text, and adds no BOS/EOS itself: the only end-of-document ids in
a dataset are the ones preprocessing appends.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from typing import Dict, List, Optional, Sequence

from megatron_dga.data.manifest import TokenizerInfo
from megatron_dga.files import sha256_of_file

ENDOFTEXT = "<|endoftext|>"

# The pre-tokenization regex of GPT-2 (tiktoken's r50k_base / gpt2 encodings).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""

GPT2_RANKS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "gpt2.tiktoken")
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"

# Tried in this order when a tokenizer.json does not say which token ends a document.
EOD_CANDIDATES = (ENDOFTEXT, "<|end_of_text|>", "</s>", "<eos>")


class TokenizerError(ValueError):
    """A tokenizer that cannot be built from the flags or files given."""


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
            raise TokenizerError(f"tiktoken ranks file not found: {ranks_file} (--tokenizer-model)")
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


class _LibraryTokenizer(Tokenizer):
    """A tokenizer held by the HF `tokenizers` library (`self._tokenizer`), with its vocabulary
    size and end-of-document id set by the subclass."""

    _tokenizer = None
    _vocab_size = _eod = 0

    @property
    def vocab_size(self) -> int:
        return self._vocab_size

    @property
    def eod(self) -> int:
        return self._eod

    def tokenize(self, text: str) -> List[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)


class HuggingFaceTokenizer(_LibraryTokenizer):
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
            raise TokenizerError(f"HuggingFace tokenizer: {where} (--tokenizer-model)")
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
    def model(self) -> Optional[str]:
        return self._path

    @property
    def model_file(self) -> Optional[str]:
        return self._tokenizer_file


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


class GPT2FilesTokenizer(_LibraryTokenizer):
    """GPT-2's byte-level BPE from a vocab.json and a merges.txt (Megatron's --vocab-file and
    --merge-file); end of document `<|endoftext|>`."""

    name = "GPT2BPETokenizer"

    def __init__(self, vocab_file: str, merge_file: str):
        from tokenizers import Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

        for path, flag in ((vocab_file, "--vocab-file"), (merge_file, "--merge-file")):
            if not os.path.isfile(path):
                raise TokenizerError(f"{flag} {path}: file not found")
        try:
            bpe = models.BPE.from_file(vocab_file, merge_file)
        except Exception as e:  # the library raises bare Exceptions on malformed files
            raise TokenizerError(f"--vocab-file {vocab_file} / --merge-file {merge_file}: not a GPT-2 BPE ({e})") \
                from None
        self._tokenizer = HFTokenizer(bpe)
        self._tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        self._tokenizer.decoder = decoders.ByteLevel()
        vocab = self._tokenizer.get_vocab()
        if ENDOFTEXT not in vocab:
            raise TokenizerError(f"--vocab-file {vocab_file}: no {ENDOFTEXT} token to end documents")
        self._vocab_file, self._merge_file = os.path.abspath(vocab_file), os.path.abspath(merge_file)
        self._vocab_size = max(vocab.values()) + 1
        self._eod = vocab[ENDOFTEXT]

    @property
    def model(self) -> Optional[str]:
        return self._vocab_file


class SentencePieceTokenizer(Tokenizer):
    """A sentencepiece model; end of document is its eos. `add_bos`: start every document
    with bos (Megatron's Llama2Tokenizer)."""

    def __init__(self, model_file: str, name: str = "SentencePieceTokenizer", add_bos: bool = False):
        import sentencepiece

        if not os.path.isfile(model_file):
            raise TokenizerError(f"sentencepiece model not found: {model_file} (--tokenizer-model)")
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=model_file)
        except Exception as e:  # sentencepiece raises RuntimeError/OSError on a bad file
            raise TokenizerError(f"{model_file}: not a sentencepiece model ({e})") from None
        if self._sp.eos_id() < 0:
            raise TokenizerError(f"{model_file}: the sentencepiece model has no eos token to end documents")
        self.name, self._add_bos = name, add_bos
        self._model_file = os.path.abspath(model_file)

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size()

    @property
    def eod(self) -> int:
        return self._sp.eos_id()

    @property
    def model(self) -> Optional[str]:
        return self._model_file

    def tokenize(self, text: str) -> List[int]:
        ids = self._sp.encode(text)
        return [self._sp.bos_id(), *ids] if self._add_bos else ids

    def detokenize(self, ids: Sequence[int]) -> str:
        return self._sp.decode(list(ids))


class NullTokenizer(Tokenizer):
    """Megatron's NullTokenizer: a text is its ids written out, separated by spaces; ids are
    below `vocab_size`, and the end of document is `vocab_size` itself."""

    name = "NullTokenizer"

    def __init__(self, vocab_size: Optional[int]):
        if not vocab_size or vocab_size <= 0:
            raise TokenizerError("--tokenizer-type NullTokenizer needs --vocab-size")
        self._ids = int(vocab_size)

    @property
    def vocab_size(self) -> int:
        return self._ids + 1

    @property
    def eod(self) -> int:
        return self._ids

    @property
    def model(self) -> Optional[str]:
        return None

    def tokenize(self, text: str) -> List[int]:
        return [int(x) for x in text.split()]

    def detokenize(self, ids: Sequence[int]) -> str:
        return " ".join(str(int(i)) for i in ids)


# Megatron's TikTokenizer pre-tokenization patterns (--tiktoken-pattern).
TIKTOKEN_PATTERNS = {
    "v1": r"[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+",
    "v2": r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*"
          r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

TOKENIZER_TYPES = ("GPT2BPETokenizer", "HuggingFaceTokenizer", "TikTokenizer", "SentencePieceTokenizer",
                   "GPTSentencePieceTokenizer", "Llama2Tokenizer", "NullTokenizer")


def build_tokenizer(tokenizer_type: str, tokenizer_model: Optional[str] = None, *, vocab_file: Optional[str] = None,
                    merge_file: Optional[str] = None, vocab_size: Optional[int] = None,
                    tiktoken_pattern: Optional[str] = None) -> Tokenizer:
    """The tokenizer named by --tokenizer-type, read from --tokenizer-model (or --vocab-file and
    --merge-file) where it needs one."""
    if tokenizer_type == "GPT2BPETokenizer":
        if vocab_file or merge_file:
            if not (vocab_file and merge_file):
                raise TokenizerError("--tokenizer-type GPT2BPETokenizer: give both --vocab-file and --merge-file, "
                                     "or neither (the packaged GPT-2 BPE)")
            return GPT2FilesTokenizer(vocab_file, merge_file)
        if tokenizer_model is not None:
            raise TokenizerError(
                "--tokenizer-type GPT2BPETokenizer uses its packaged ranks file, or --vocab-file and --merge-file, "
                "and takes no --tokenizer-model (use TikTokenizer for another ranks file)"
            )
        return GPT2BPETokenizer()
    if tokenizer_type == "NullTokenizer":
        return NullTokenizer(vocab_size)
    if tokenizer_type in TOKENIZER_TYPES:
        if not tokenizer_model:
            what = {"HuggingFaceTokenizer": "a tokenizer.json or a folder holding one",
                    "TikTokenizer": "a tiktoken ranks file"}.get(tokenizer_type, "a sentencepiece model")
            raise TokenizerError(f"--tokenizer-type {tokenizer_type} needs --tokenizer-model ({what})")
        if tokenizer_type == "HuggingFaceTokenizer":
            folder_model = os.path.join(tokenizer_model, "tokenizer.model")
            if os.path.isdir(tokenizer_model) and not os.path.isfile(os.path.join(tokenizer_model, "tokenizer.json")) \
                    and os.path.isfile(folder_model):
                return SentencePieceTokenizer(folder_model, name="HuggingFaceTokenizer")
            if not os.path.exists(tokenizer_model):
                raise TokenizerError(f"--tokenizer-model {tokenizer_model}: no such file or folder (a local "
                                     f"tokenizer.json, or a folder holding one; nothing is downloaded from a hub)")
            return HuggingFaceTokenizer(tokenizer_model)
        if tokenizer_type == "TikTokenizer":
            if tiktoken_pattern is None:
                return TikTokenizer(tokenizer_model)
            return TikTokenizer(tokenizer_model, pattern=TIKTOKEN_PATTERNS[tiktoken_pattern])
        return SentencePieceTokenizer(tokenizer_model, name=tokenizer_type, add_bos=tokenizer_type == "Llama2Tokenizer")
    raise TokenizerError(
        f"unknown --tokenizer-type {tokenizer_type!r}; choose one of {', '.join(TOKENIZER_TYPES)}"
    )
