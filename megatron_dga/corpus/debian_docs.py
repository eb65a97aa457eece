"""What every Debian package carries about itself: its changelog and its copyright file.

`usr/share/doc/PKG/changelog.Debian.gz` (for a native package, whose version has no
Debian revision, `changelog.gz` is the Debian changelog) and `usr/share/doc/PKG/copyright`.
Binary packages built from one source package ship the same files, so only the first
package of each source is used. A doc folder that is a symlink to another package's is
skipped. `base-files` also ships the full texts of the common licenses
(`usr/share/common-licenses/`), one document each. `src` is the file's path in the package.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator, Optional, Set

from .document import Document
from .files import find_files, read_text
from .packages import FetchedPackage


def _doc_file(package: FetchedPackage, *names: str) -> Optional[str]:
    """Relative path of the first of `names` in the package's own doc folder."""
    doc_dir = os.path.join(package.root, "usr", "share", "doc", package.ref.name)
    if os.path.islink(doc_dir) or not os.path.isdir(doc_dir):
        return None
    for name in names:
        path = os.path.join(doc_dir, name)
        if os.path.isfile(path) and not os.path.islink(path):
            return f"usr/share/doc/{package.ref.name}/{name}"
    return None


def _source_name(package: FetchedPackage) -> str:
    return package.fields.get("Source") or package.ref.name


def is_native_version(version: str) -> bool:
    return "-" not in version


def changelog_documents(packages: Iterable[FetchedPackage]) -> Iterator[Document]:
    seen_sources: Set[str] = set()
    for package in packages:
        names = ["changelog.Debian.gz", "changelog.Debian"]
        if is_native_version(package.version):
            names += ["changelog.gz", "changelog"]
        rel = _doc_file(package, *names)
        source = _source_name(package)
        if rel is None or source in seen_sources:
            continue
        seen_sources.add(source)
        yield Document(read_text(os.path.join(package.root, rel)), rel)


def copyright_documents(packages: Iterable[FetchedPackage]) -> Iterator[Document]:
    seen_sources: Set[str] = set()
    for package in packages:
        rel = _doc_file(package, "copyright")
        source = _source_name(package)
        if rel is None or source in seen_sources:
            continue
        seen_sources.add(source)
        yield Document(read_text(os.path.join(package.root, rel)), rel)


def common_license_documents(base_files: FetchedPackage) -> Iterator[Document]:
    for rel in find_files(base_files.root, ["usr/share/common-licenses/*"]):
        yield Document(read_text(os.path.join(base_files.root, rel)), rel)
