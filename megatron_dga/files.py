"""File helpers shared by the tools and the trainer.

Writes are atomic: a reader sees the old file or the complete new one, never half of one,
and a failed write leaves nothing behind. JSON inputs are read with errors that name the file
(and the flag it came from).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from typing import IO, Iterator

import numpy as np


@contextmanager
def atomic_open(path: str, mode: str = "w") -> Iterator[IO]:
    """Write to `path.tmp.<pid>` and move it over `path` only if the block succeeds.

    The data reaches the disk before the rename, so after a crash the name holds the old
    file or the complete new one (checkpoint trackers rely on it)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    encoding = None if "b" in mode else "utf-8"
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def read_json(path: str, what: str):
    """The JSON value in `path`; `what` (a flag, or a description) prefixes every error."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{what}: file not found: {path}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} {path}: invalid JSON at line {e.lineno}: {e.msg}") from None


def write_json(path: str, obj) -> None:
    with atomic_open(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_npy(path: str, array: np.ndarray) -> None:
    with atomic_open(path, "wb") as f:
        np.save(f, array)


def write_npz(path: str, arrays: dict) -> None:
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def fsync_tree(root: str) -> None:
    """Flush every file under `root`, and the folders themselves, to the disk: what another
    library wrote there survives a crash once `root` is renamed into place."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def sha256_of_file(path: str) -> str:
    """The file's sha256, read in 1 MiB blocks (packages and tokenizer files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
