"""The domains manifest (`domains.json`): the one file training reads to find its data.

It lists every domain's Megatron indexed dataset (prefix of `<prefix>.bin/.idx`) with its
document and token counts, and the tokenizer that produced them, so that training can check
the model's vocabulary against it. Prefixes are stored relative to the manifest's folder so
that a data folder can be moved or copied as a whole.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import List, Optional

from megatron_dga.files import read_json, write_json

MANIFEST_VERSION = 1


@dataclass
class TokenizerInfo:
    type: str
    model: Optional[str]
    vocab_size: int
    eod: int


@dataclass
class DomainEntry:
    name: str
    prefix: str  # relative to the manifest's folder, or absolute
    documents: int
    tokens: int


@dataclass
class DomainsManifest:
    tokenizer: TokenizerInfo
    domains: List[DomainEntry] = field(default_factory=list)
    path: Optional[str] = None  # where it was read from; not serialised

    def resolve_prefix(self, entry: DomainEntry) -> str:
        """Absolute prefix of a domain's .bin/.idx pair."""
        if os.path.isabs(entry.prefix) or self.path is None:
            return entry.prefix
        return os.path.join(os.path.dirname(os.path.abspath(self.path)), entry.prefix)

    @property
    def names(self) -> List[str]:
        return [d.name for d in self.domains]

    def to_json(self) -> dict:
        return {
            "version": MANIFEST_VERSION,
            "tokenizer": asdict(self.tokenizer),
            "domains": [asdict(d) for d in self.domains],
        }

    def save(self, path: str) -> None:
        """Write atomically: a reader never sees a half-written manifest."""
        write_json(path, self.to_json())
        self.path = path

    @classmethod
    def load(cls, path: str) -> "DomainsManifest":
        raw = read_json(path, "domains manifest")
        try:
            if raw.get("version") != MANIFEST_VERSION:
                raise ValueError(f"unsupported manifest version {raw.get('version')!r}")
            manifest = cls(
                tokenizer=TokenizerInfo(**raw["tokenizer"]),
                domains=[DomainEntry(**d) for d in raw["domains"]],
                path=path,
            )
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"{path}: malformed domains manifest ({e})") from None
        names = manifest.names
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: duplicate domain names in {names}")
        return manifest
