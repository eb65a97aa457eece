"""Documents made of whole files: from an unpacked tree, a tar stream or a zip archive.

One file is one document; `src` is its path inside the tree or archive. Files compressed
with gzip (man pages, changelogs, `*.el.gz`) are read decompressed. Trees are walked in
sorted order and archives in their stored order, so extraction order is reproducible.
"""

from __future__ import annotations

import fnmatch
import gzip
import os
import tarfile
import zipfile
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

from .document import Document, decode_bytes

# Larger source files are generated tables (unicode data, register maps), not prose or code
# people write; they would also dominate a few-megabyte domain on their own.
DEFAULT_MAX_FILE_BYTES = 1_000_000

GZIP_MAGIC = b"\x1f\x8b"


def decompress_if_gzip(data: bytes) -> bytes:
    return gzip.decompress(data) if data[:2] == GZIP_MAGIC else data


def read_text(path: str) -> str:
    with open(path, "rb") as f:
        return decode_bytes(decompress_if_gzip(f.read()))


def matches(rel_path: str, patterns: Sequence[str]) -> bool:
    """fnmatch on the whole relative path, where `*` also crosses `/`."""
    return any(fnmatch.fnmatchcase(rel_path, pattern) for pattern in patterns)


def find_files(
    root: str, patterns: Sequence[str], exclude: Sequence[str] = ()
) -> List[str]:
    """Relative paths (sorted) of regular files under `root` matching any of `patterns`."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or not os.path.isfile(full):
                continue  # symlinks duplicate files the tree already has
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            if matches(rel, patterns) and not matches(rel, exclude):
                found.append(rel)
    return sorted(found)


def tree_documents(
    root: str,
    patterns: Sequence[str],
    exclude: Sequence[str] = (),
    max_bytes: Optional[int] = DEFAULT_MAX_FILE_BYTES,
    transform: Optional[Callable[[str], str]] = None,
) -> Iterator[Document]:
    """One document per matching file under `root` (e.g. an unpacked .deb)."""
    for rel in find_files(root, patterns, exclude):
        full = os.path.join(root, rel)
        if max_bytes is not None and os.path.getsize(full) > max_bytes:
            continue
        text = read_text(full)
        yield Document(transform(text) if transform else text, rel)


def tar_documents(
    tar_path: str,
    patterns: Sequence[str],
    exclude: Sequence[str] = (),
    max_bytes: Optional[int] = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[Document]:
    """One document per matching member of a (compressed) tar, read as a stream.

    Streaming (`r|*`) never seeks, so a 1 GB kernel tree is read once, member by member,
    without being unpacked to disk.
    """
    try:
        with tarfile.open(tar_path, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                name = member.name[2:] if member.name.startswith("./") else member.name
                if not matches(name, patterns) or matches(name, exclude):
                    continue
                if max_bytes is not None and member.size > max_bytes:
                    continue
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                yield Document(decode_bytes(decompress_if_gzip(handle.read())), name)
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ValueError(f"{tar_path}: cannot read as a tar archive ({e})") from e


def zip_documents(
    zip_path: str,
    patterns: Sequence[str],
    exclude: Sequence[str] = (),
    max_bytes: Optional[int] = DEFAULT_MAX_FILE_BYTES,
) -> Iterator[Document]:
    """One document per matching member of a zip (a wheel, a JDK src.zip), sorted by name."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            infos = sorted(archive.infolist(), key=lambda info: info.filename)
            for info in infos:
                if info.is_dir() or not matches(info.filename, patterns):
                    continue
                if matches(info.filename, exclude):
                    continue
                if max_bytes is not None and info.file_size > max_bytes:
                    continue
                yield Document(decode_bytes(archive.read(info)), info.filename)
    except zipfile.BadZipFile as e:
        raise ValueError(f"{zip_path}: not a zip archive ({e})") from e


def one_file(root: str, pattern: str) -> str:
    """The single file under `root` matching `pattern`, or a clear error."""
    found = find_files(root, [pattern])
    if len(found) != 1:
        what = "no file" if not found else f"{len(found)} files ({', '.join(found[:3])}...)"
        raise FileNotFoundError(
            f"expected one file matching {pattern!r} under {root}, found {what}"
        )
    return os.path.join(root, found[0])


def chain(*iterables: Iterable[Document]) -> Iterator[Document]:
    for iterable in iterables:
        yield from iterable
