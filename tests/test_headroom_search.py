"""examples/austen/headroom.py: the successive-halving search for the best fixed mixture, with
each candidate's training replaced by a known loss surface (the runs themselves are run.py's,
tested elsewhere), and the report's headroom table."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "examples", "austen"))

import headroom  # noqa: E402

NAMES = ["a", "b", "c", "d", "e"]
BEST = {"b": 0.6, "d": 0.4}  # the surface's minimum


def loss_at(weights, rung):
    """Lower near BEST, lower with more training."""
    distance = sum((weights.get(n, 0.0) - BEST.get(n, 0.0)) ** 2 for n in NAMES)
    return 5.0 + distance + 300.0 / rung


@pytest.fixture
def search(tmp_path, monkeypatch):
    manifest = tmp_path / "domains.json"
    manifest.write_text(json.dumps({"domains": [{"name": n} for n in NAMES]}))
    a = headroom.parse_args(["--prepared", "p.json", "--work-dir", str(tmp_path), "--experiment", "headroom-x",
                             "--rungs", "100,200,400", "--", "--model", "tiny"])
    s = headroom.Search(a, {"domains_manifest": str(manifest)})
    trained = []

    def train(label, rung):
        trained.append((label, rung))
        c = s.candidates[label]
        c["losses"][str(rung)] = loss_at(c["weights"], rung)
        c["iterations"] = max(c.get("iterations", 0), rung)
        s.save()
        return c["losses"][str(rung)]

    monkeypatch.setattr(s, "train", train)
    return s, trained


def test_the_search_finds_the_best_mixture_and_stops_the_others_early(search):
    s, trained = search
    winner = s.run()
    assert winner == "b60+d40" or set(s.candidates[winner]["weights"]) == {"b", "d"}
    assert loss_at(s.candidates[winner]["weights"], 400) < loss_at({n: 0.2 for n in NAMES}, 400)
    full = {label for label, rung in trained if rung == 400}
    assert "uniform" in full and winner in full
    assert len(full) <= 4 < len(s.candidates)  # most candidates never reach the last rung
    with open(s.path) as f:
        saved = json.load(f)
    assert saved["winner"] == winner
    assert saved["iterations_trained"] == sum(max(r for label_, r in trained if label_ == label)
                                              for label in {label for label, _ in trained})


def test_labels_name_a_mixture_and_uniform():
    assert headroom.label_of({n: 0.2 for n in NAMES}, NAMES) == "uniform"
    assert headroom.label_of({"a": 0.5, "b": 0.497, "c": 0.003}, NAMES) == "a50+b50+rest"
    assert headroom.spec({"b": 0.25, "a": 0.75}) == "a=0.75,b=0.25"


def write_run(work, experiment, regime, method, seed, final_loss, done=None):
    folder = work / "runs" / experiment / regime / method / f"seed{seed}"
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for it in (10, 20):
            f.write(json.dumps({"type": "train", "iteration": it, "lm_loss": 6.0, "data_mixture": {"a": 0.5, "b": 0.5},
                                "domain_epochs": {"a": 1.0, "b": 1.0}}) + "\n")
            f.write(json.dumps({"type": "validation", "iteration": it, "per_set": {"specific": final_loss + 20 - it}})
                    + "\n")
    (folder / "run.json").write_text(json.dumps({
        "method": method.split("-")[0], "regime": regime, "domains": "sources", "seed": seed, "train_iters": 20,
        "iterations_done": done or 20, "experiment": experiment, "label": method, "wall_seconds": 10.0,
        "run_args": ["--prepared", f"{work}/prepared.json", "--seed", str(seed), "--out", str(folder)]}))


def test_the_report_shows_the_captured_fraction(tmp_path):
    work = tmp_path / "work"
    (work / "headroom").mkdir(parents=True)
    (work / "prepared.json").write_text(json.dumps({"prepare_args": ["--work-dir", str(work)]}))
    (work / "headroom" / "headroom-x-seed1.json").write_text(json.dumps({
        "experiment": "headroom-x", "seed": 1, "rungs": [10, 20], "winner": "a80+b20", "iterations_trained": 100,
        "seconds": 7200.0, "candidates": {"a80+b20": {"weights": {"a": 0.8, "b": 0.2}}}}))
    for seed, shift in ((1, 0.0), (2, 0.02)):
        write_run(work, "headroom-x", "plenty", "uniform", seed, 5.0 + shift)
        write_run(work, "headroom-x", "plenty", "static-a80+b20", seed, 4.6 + shift)
        write_run(work, "headroom-x", "plenty", "dga", seed, 4.8 + shift)
    write_run(work, "headroom-x", "plenty", "static-b100", 1, 5.5, done=10)  # stopped early by the search
    output = tmp_path / "results.md"
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "austen", "report.py"),
                             "--work-dir", str(work), "--output", str(output)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| x | plenty |"))
    assert "a 0.80, b 0.20" in row and "| 0.50 |" in row and "5.0 runs, 2.0 h" in row, row
    assert "| 0.50 / 0.50 |" in row, row  # each seed against its own uniform and best-fixed runs
    assert "static-b100" not in text  # a candidate stopped early is not a finished run
    # Along the run: uniform minus DGA at each evaluation, averaged over the seeds (5 - 4.8 at both).
    assert "| method (runs) | 10 | 20 |" in text
    assert "| dga (2) | 0.200 | 0.200 |" in text


def test_a_runs_final_loss_is_the_mean_of_its_last_three_evaluations(tmp_path):
    import report

    folder = tmp_path / "dga" / "seed1"
    folder.mkdir(parents=True)
    losses = {10: 9.0, 20: 6.0, 30: 5.0, 40: 4.0}  # the first is left out
    with open(folder / "metrics.jsonl", "w") as f:
        for it, loss in losses.items():
            f.write(json.dumps({"type": "validation", "iteration": it, "per_set": {"specific": loss}}) + "\n")
    (folder / "run.json").write_text(json.dumps({"train_iters": 40, "iterations_done": 40}))
    assert report.final_losses(str(tmp_path / "dga")) == [pytest.approx(5.0)]
