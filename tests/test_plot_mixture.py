"""tools/plot_mixture.py on metrics files written here."""

import json
import os
import subprocess
import sys

import pytest

from megatron_dga.monitoring.runs import read_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_metrics(path, dga):
    with open(path, "w") as f:
        for it in (10, 20, 30):
            w = 0.5 + 0.01 * it if dga else 0.5
            record = {"type": "train", "iteration": it, "lm_loss": 5.0 - it / 20, "data_mixture": {"a": w, "b": 1 - w}}
            if dga:
                record["alignment"] = {"a": 0.3, "b": -0.1}
            f.write(json.dumps(record) + "\n")
            f.write(json.dumps({"type": "validation", "iteration": it, "lm_loss_validation": 5.5 - it / 30,
                                "per_set": {"a": 5.4, "specific": 5.8 - it / 25}}) + "\n")


def test_plot_tool_writes_the_figures(tmp_path):
    write_metrics(tmp_path / "dga.jsonl", dga=True)
    write_metrics(tmp_path / "uniform.jsonl", dga=False)
    out = tmp_path / "plots"
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "plot_mixture.py"),
                             f"dga={tmp_path / 'dga.jsonl'}", f"uniform={tmp_path / 'uniform.jsonl'}",
                             "--output-dir", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for name in ("weights.png", "alignment.png", "losses.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    run = read_run(str(tmp_path / "dga.jsonl"))
    assert run.series["data-mixture/a"] == [(10, 0.6), (20, 0.7), (30, 0.8)]
    assert run.series["lm loss validation/specific"][-1] == (30, pytest.approx(4.6))
    assert run.name == os.path.basename(str(tmp_path))


def test_plot_tool_refuses_a_missing_run(tmp_path):
    result = subprocess.run([sys.executable, os.path.join(REPO, "tools", "plot_mixture.py"), str(tmp_path / "nope")],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "neither a metrics file nor a TensorBoard folder" in result.stderr
