"""Reading R lazy-load databases (`data/Rdata.rdb` + `Rdata.rdx`) with the standard library.

An R package's data folder keeps each object in `Rdata.rdb` as a 4-byte big-endian length
followed by a compressed block (zlib by default; `Z`, `2`, `X` or `0` type byte for the
other compressions), and `Rdata.rdx` as a (usually gzip-) compressed serialized list
`list(variables = list(NAME = c(offset, length), ...), references = ..., compressed = ...)`.
The blocks are R's XDR serialization (format 2 or 3). `unserialize` reads the subset that
data objects use: vectors (logical, integer, double, complex, character, list, raw), their
attributes, pairlists, symbols, references and the common ALTREP wrappers; anything else
(closures, byte code, external pointers) is reported as unsupported.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

# SEXP types (R Internals, "Serialization formats")
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
DOTSXP, VECSXP, EXPRSXP, RAWSXP, S4SXP = 17, 19, 20, 24, 25
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, NAMESPACESXP, PACKAGESXP = 251, 250, 249, 248
PERSISTSXP, EMPTYENV_SXP, BASEENV_SXP = 247, 242, 241
ATTRLANGSXP, ATTRLISTSXP, ALTREP_SXP = 240, 239, 238

NA_INTEGER = -(2**31)
_LATIN1_MASK = 1 << 2
_PAIRLIST_TYPES = (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP, ATTRLANGSXP, ATTRLISTSXP)
_MARKERS = {
    GLOBALENV_SXP: "<globalenv>", UNBOUNDVALUE_SXP: "<unbound>", MISSINGARG_SXP: "<missing>",
    BASENAMESPACE_SXP: "<base namespace>", EMPTYENV_SXP: "<emptyenv>", BASEENV_SXP: "<baseenv>",
}  # fmt: skip


class RDataError(ValueError):
    """An R file that cannot be read (corrupt, or using an unsupported feature)."""


@dataclass
class RSymbol:
    name: str


@dataclass
class RObject:
    """An R value: `sexptype`, its `value` (list of elements, or a dict for pairlists and
    environments) and `attributes` (name -> value)."""

    sexptype: int
    value: Any
    attributes: Dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> Optional[List[Optional[str]]]:
        names = self.attributes.get("names")
        return names.value if isinstance(names, RObject) else None

    def as_dict(self) -> Dict[str, Any]:
        """A named list or vector as {name: element}."""
        names = self.names
        if names is None or len(names) != len(self.value):
            raise RDataError("R object has no names to index by")
        return dict(zip(names, self.value))


class _XdrReader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RDataError(f"truncated R serialization (need {n} bytes at offset {self.pos})")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two more ints
            hi, lo = self.int(), self.int()
            n = (hi << 32) + (lo & 0xFFFFFFFF)
        return n


class _Unserializer:
    def __init__(self, data: bytes):
        self.r = _XdrReader(data)
        self.refs: List[Any] = []

    def header(self) -> None:
        fmt = self.r.take(2)
        if fmt != b"X\n":
            raise RDataError(f"not an XDR R serialization (format bytes {fmt!r})")
        version = self.r.int()
        self.r.int(), self.r.int()  # writer R version, minimal reader version
        if version == 3:
            self.r.take(self.r.int())  # native encoding name
        elif version != 2:
            raise RDataError(f"unsupported R serialization version {version}")

    def item(self) -> Any:
        flags = self.r.int()
        sexptype, levels = flags & 0xFF, flags >> 12
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        if sexptype == NILVALUE_SXP:
            return None
        if sexptype in _MARKERS:
            return _MARKERS[sexptype]
        if sexptype == REFSXP:
            index = flags >> 8 or self.r.int()
            return self.refs[index - 1]
        if sexptype in (PERSISTSXP, NAMESPACESXP, PACKAGESXP):
            self.r.int()  # always 0
            info = [self._charsxp() for _ in range(self.r.int())]
            obj = RObject(sexptype, info)
            self.refs.append(obj)
            return obj
        if sexptype == SYMSXP:
            symbol = RSymbol(self.item() or "")
            self.refs.append(symbol)
            return symbol
        if sexptype == ENVSXP:
            env = RObject(ENVSXP, {})
            self.refs.append(env)
            self.r.int()  # locked
            enclosure, frame, hashtab, attrib = self.item(), self.item(), self.item(), self.item()
            env.value = {"enclos": enclosure, "frame": frame, "hashtab": hashtab}
            env.attributes = _pairlist_dict(attrib)
            return env
        if sexptype in _PAIRLIST_TYPES:
            return self._pairlist(sexptype, has_attr, has_tag)
        if sexptype == ALTREP_SXP:
            return self._altrep()
        if sexptype == CHARSXP:
            return self._charsxp_body(levels)
        value = self._vector(sexptype)
        attributes = _pairlist_dict(self.item()) if has_attr else {}
        return RObject(sexptype, value, attributes)

    def _pairlist(self, sexptype: int, has_attr: bool, has_tag: bool) -> RObject:
        # Iterative over the CDR chain: attribute lists and formulas can be long.
        head = RObject(sexptype, {})
        items: Dict[str, Any] = {}
        position = 0
        while True:
            attributes = _pairlist_dict(self.item()) if has_attr else {}
            tag = self.item() if has_tag else None
            key = tag.name if isinstance(tag, RSymbol) else str(position)
            items[key] = self.item()
            if position == 0:
                head.attributes = attributes
            position += 1
            flags = self.r.int()
            next_type = flags & 0xFF
            if next_type == NILVALUE_SXP:
                break
            if next_type not in _PAIRLIST_TYPES:
                self.r.pos -= 4  # a non-pairlist CDR: read it as the last element
                items[str(position)] = self.item()
                break
            has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))
        head.value = items
        return head

    def _charsxp(self) -> Optional[str]:
        flags = self.r.int()
        if flags & 0xFF != CHARSXP:
            raise RDataError(f"expected a string (CHARSXP), found SEXP type {flags & 0xFF}")
        return self._charsxp_body(flags >> 12)

    def _charsxp_body(self, levels: int) -> Optional[str]:
        n = self.r.int()
        if n == -1:
            return None  # NA_character_
        raw = self.r.take(n)
        return raw.decode("latin-1" if levels & _LATIN1_MASK else "utf-8", errors="replace")

    def _vector(self, sexptype: int) -> List[Any]:
        n = self.r.length()
        if sexptype == STRSXP:
            return [self._charsxp() for _ in range(n)]
        if sexptype in (LGLSXP, INTSXP):
            values = list(struct.unpack(f">{n}i", self.r.take(4 * n)))
            if sexptype == LGLSXP:
                return [None if v == NA_INTEGER else bool(v) for v in values]
            return [None if v == NA_INTEGER else v for v in values]
        if sexptype == REALSXP:
            return list(struct.unpack(f">{n}d", self.r.take(8 * n)))
        if sexptype == CPLXSXP:
            parts = struct.unpack(f">{2 * n}d", self.r.take(16 * n))
            return [complex(parts[2 * i], parts[2 * i + 1]) for i in range(n)]
        if sexptype in (VECSXP, EXPRSXP):
            return [self.item() for _ in range(n)]
        if sexptype == RAWSXP:
            return list(self.r.take(n))
        raise RDataError(f"unsupported R object type {sexptype} in serialization")

    def _altrep(self) -> Any:
        info, state, attrib = self.item(), self.item(), self.item()
        class_name = ""
        if isinstance(info, RObject) and info.value:
            first = next(iter(info.value.values()))
            class_name = first.name if isinstance(first, RSymbol) else ""
        if class_name in ("compact_intseq", "compact_realseq"):
            n, start, step = state.value[:3]
            values = [start + i * step for i in range(int(n))]
            sexptype = INTSXP if class_name == "compact_intseq" else REALSXP
            if sexptype == INTSXP:
                values = [int(v) for v in values]
            return RObject(sexptype, values, _pairlist_dict(attrib))
        if class_name.startswith("wrap_") or class_name == "deferred_string":
            inner = state.value[0] if isinstance(state, RObject) else state
            if isinstance(inner, RObject) and attrib is not None:
                inner.attributes.update(_pairlist_dict(attrib))
            return inner
        raise RDataError(f"unsupported ALTREP class {class_name!r} in serialization")


def _pairlist_dict(obj: Any) -> Dict[str, Any]:
    return dict(obj.value) if isinstance(obj, RObject) and isinstance(obj.value, dict) else {}


def unserialize(data: bytes) -> Any:
    """An R object from the bytes of an XDR serialization (what `serialize()` writes)."""
    reader = _Unserializer(data)
    reader.header()
    return reader.item()


def decompress_r_file(data: bytes) -> bytes:
    """The serialization inside an .rds/.rdx file (gzip, bzip2, xz or uncompressed)."""
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:3] == b"BZh":
        return bz2.decompress(data)
    if data[:6] == b"\xfd7zXZ\x00":
        return lzma.decompress(data)
    return data


def decompress_block(block: bytes) -> bytes:
    """One object's block of an .rdb file: 4-byte length, then the compressed bytes."""
    if len(block) < 5:
        raise RDataError("lazy-load block shorter than its header")
    expected = struct.unpack(">I", block[:4])[0]
    body = block[4:]
    type_byte = body[:1]
    if type_byte == b"Z":
        out = zlib.decompress(body[1:])
    elif type_byte == b"2":
        out = bz2.decompress(body[1:])
    elif type_byte == b"X":
        out = lzma.decompress(body[1:])
    elif type_byte == b"0":
        out = body[1:]
    else:
        out = zlib.decompress(body)  # plain `compress = TRUE`: zlib without a type byte
    if len(out) != expected:
        raise RDataError(
            f"lazy-load block decompressed to {len(out)} bytes, header says {expected}"
        )
    return out


class LazyLoadDB:
    """The objects of one `<base>.rdb` / `<base>.rdx` pair, loaded by name on demand."""

    def __init__(self, base_path: str):
        self.rdb_path, self.rdx_path = base_path + ".rdb", base_path + ".rdx"
        try:
            with open(self.rdx_path, "rb") as f:
                index = unserialize(decompress_r_file(f.read()))
            self.variables: Dict[str, List[int]] = {
                name: entry.value for name, entry in index.as_dict()["variables"].as_dict().items()
            }
        except (RDataError, KeyError, AttributeError, OSError, zlib.error) as e:
            raise RDataError(f"{self.rdx_path}: not a readable lazy-load index ({e})") from e

    def names(self) -> List[str]:
        return list(self.variables)

    def load(self, name: str) -> Any:
        if name not in self.variables:
            raise KeyError(f"{self.rdx_path}: no object {name!r} (has {', '.join(self.names())})")
        offset, length = (int(v) for v in self.variables[name][:2])
        with open(self.rdb_path, "rb") as f:
            f.seek(offset)
            block = f.read(length)
        try:
            return unserialize(decompress_block(block))
        except (RDataError, zlib.error, lzma.LZMAError, OSError) as e:
            raise RDataError(f"{self.rdb_path}: object {name!r} unreadable ({e})") from e
