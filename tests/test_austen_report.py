"""examples/austen/report.py on runs written here: tables, per-seed numbers, commands, plots."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_run(work, method, seed, final_loss, weights, epochs):
    folder = work / "runs" / "sources" / "token-limited" / method / f"seed{seed}"
    folder.mkdir(parents=True)
    with open(folder / "metrics.jsonl", "w") as f:
        for it in (10, 20):
            f.write(json.dumps({"type": "train", "iteration": it, "lm_loss": 6.0 - it / 100,
                                "data_mixture": weights, "domain_epochs": epochs}) + "\n")
            loss = final_loss + (20 - it) / 10  # falls to final_loss at the last evaluation
            f.write(json.dumps({"type": "validation", "iteration": it, "lm_loss_validation": loss,
                                "per_set": {"specific": loss}}) + "\n")
    run_args = ["--prepared", f"{work}/prepared.json", "--method", method, "--seed", str(seed),
                "--out", str(folder)]
    (folder / "run.json").write_text(json.dumps({
        "method": method, "regime": "token-limited", "domains": "sources", "seed": seed, "train_iters": 20,
        "wall_seconds": 100.0 * seed, "run_args": run_args}))


def test_report_tables_commands_and_plots(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "prepared.json").write_text(json.dumps({"prepare_args": ["--work-dir", str(work), "--importance"]}))
    for seed, loss in ((1, 6.25), (2, 6.35)):
        write_run(work, "uniform", seed, loss, {"a": 0.5, "b": 0.5}, {"a": 1.0, "b": 2.0})
        write_run(work, "dga-ema", seed, loss - 0.1, {"a": 0.8, "b": 0.2}, {"a": 7.5, "b": 0.5})
    notes = tmp_path / "notes.md"
    notes.write_text("DGA helps here.\n")
    output = tmp_path / "docs" / "results.md"
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "austen", "report.py"),
                             "--work-dir", str(work), "--output", str(output), "--notes", str(notes)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = output.read_text()
    assert "DGA helps here." in text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    assert "6.300 ± 0.071" in rows["uniform"] and "6.250 / 6.350" in rows["uniform"]
    assert "6.200 ± 0.071" in rows["dga-ema"] and "a 0.80, b 0.20" in rows["dga-ema"]
    assert "7.5 (a)" in rows["dga-ema"] and "150 s" in rows["dga-ema"]
    assert f"`WORK={work}`" in text and "prepare.py --work-dir $WORK --importance" in text
    assert "--method dga-ema --seed 2 --out $WORK/runs/sources/token-limited/dga-ema/seed2" in text
    for name in ("sources-token-limited-losses.png", "sources-token-limited-weights.png",
                 "sources-token-limited-seed2-losses.png", "sources-token-limited-seed2-weights.png"):
        assert (tmp_path / "docs" / "results" / name).read_bytes()[:4] == b"\x89PNG"
        assert f"(results/{name})" in text


def test_report_refuses_an_empty_work_dir(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", "austen", "report.py"),
                             "--work-dir", str(tmp_path), "--output", str(tmp_path / "r.md")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "no finished runs" in result.stderr


def test_unigram_baseline_by_hand():
    sys.path.insert(0, os.path.join(REPO, "examples", "austen"))
    from unigram import unigram_cross_entropy

    # Counts of tokens 0, 1, 2 in training: 3, 1, 0; add-one: 4/7, 2/7, 1/7.
    ce = unigram_cross_entropy(np.array([0, 0, 0, 1]), np.array([0, 2]), vocab_size=3)
    assert ce == pytest.approx(-(np.log(4 / 7) + np.log(1 / 7)) / 2)


def test_a_histogram_restricted_to_the_kept_clusters_is_one_importance_accepts(tmp_path):
    """prepare.py drops clusters too small to cut sequences from; the specific set's histogram
    must drop them too, or --mixing importance refuses it (clusters without a domain)."""
    sys.path.insert(0, os.path.join(REPO, "examples", "austen"))
    from prepare import restrict_histogram

    from megatron_dga.mixing.importance import read_histogram

    full = tmp_path / "assign_specific.json"
    full.write_text(json.dumps({"clusters": ["c0", "c1", "c2"], "counts": [3, 5, 2], "weights": [0.3, 0.5, 0.2]}))
    kept = restrict_histogram(str(full), ["c0", "c2"], str(tmp_path / "kept.json"))
    assert list(read_histogram(kept, ["c0", "c2"])) == [0.6, 0.4]
    with pytest.raises(ValueError, match="clusters without a domain: \\['c1'\\]"):
        read_histogram(str(full), ["c0", "c2"])


def test_commands_write_out_the_update_interval_run_py_left_to_its_default():
    """A DGA run made when run.py passed its fixed interval of 10 by default is listed with it, so
    that the command still makes that run now that the default follows the probe budget."""
    sys.path.insert(0, os.path.join(REPO, "examples", "austen"))
    from report import reproducible_args

    launched = ["deepspeed", "--module", "megatron_dga.pretrain", "--dga-update-interval", "10", "--dga-lr", "0.5"]
    old = {"run_args": ["--method", "dga", "--seed", "1"], "command": launched}
    assert reproducible_args(old) == ["--method", "dga", "--seed", "1", "--dga-update-interval", "10"]
    given = {"run_args": ["--method", "dga", "--extra", "--dga-update-interval 40"],
             "command": [*launched, "--dga-update-interval", "40"]}
    assert reproducible_args(given) == given["run_args"]
    uniform = {"run_args": ["--method", "uniform"], "command": ["deepspeed", "--mixing", "uniform"]}
    assert reproducible_args(uniform) == ["--method", "uniform"]


def test_a_hand_set_update_interval_is_named_in_the_run_label_and_ranked_with_its_variant():
    """The report groups a table's rows by label: a DGA run on a hand-set interval must not be
    averaged with runs on pretrain's derived schedule, and still sorts beside its variant."""
    sys.path.insert(0, os.path.join(REPO, "examples", "austen"))
    from report import label_rank
    from run import label, parse_args

    common = ["--prepared", "p.json", "--out", "o", "--method", "dga", "--variant", "adam-control"]
    derived = label(parse_args(common))
    hand_set = label(parse_args([*common, "--dga-update-interval", "10"]))
    assert derived == "dga adam-control"
    assert hand_set == "dga adam-control (every 10)"
    assert label(parse_args(["--prepared", "p.json", "--out", "o", "--method", "dga", "--dga-update-interval", "50"])) \
        == "dga (every 50)"
    assert label(parse_args(["--prepared", "p.json", "--out", "o", "--method", "uniform",
                             "--dga-update-interval", "10"])) == "uniform"
    ranked = sorted(["dga cosine-control", hand_set, "dga (every 50)", "uniform", derived], key=label_rank)
    assert ranked == ["uniform", "dga (every 50)", derived, hand_set, "dga cosine-control"]
