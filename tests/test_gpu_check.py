"""bench/gpu_check.sh, the script for a lent GPU, runs end to end in its reduced CPU mode."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "gpu_check.sh")


def run(*args):
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1"))


def test_cpu_mode_prints_every_figure(tmp_path):
    figures_path = tmp_path / "gpu_check.json"
    result = run("--cpu", "--json", str(figures_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"preflight: nvidia-smi absent, torch [\w.+]+", out), out
    assert re.search(r"throughput: \d+ tokens/s, [\d.]+ TFLOP/s of model FLOPs, MFU [\d.]+", out), out
    assert re.search(r"peak memory: [\d.]+ GiB measured, [\d.]+ GiB estimated", out), out
    worst = float(re.search(r"largest relative difference ([\d.e+-]+)", out).group(1))
    assert worst < 1e-4  # fp32: SDPA and megatron-core's attention agree
    assert re.search(r"DGA overhead: measured ratio [\d.]+ .* measured / ideal = [\d.]+", out), out
    figures = json.loads(figures_path.read_text())
    llama = figures["llama_dga"]
    assert llama["resume_exact"] is True and llama["dga_updates"] >= 3, llama
    assert llama["update_gib"] > 0 and llama["estimate_with_dga_gib"] >= llama["estimate_gib"], llama
    assert figures["fp16_probes"] == {"skipped": "no fp16 on the CPU"}
    assert "| llama_dga | resume_exact | True |" in out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_mode_without_a_gpu_says_so():
    result = run()
    assert result.returncode == 2
    assert "no CUDA GPU here; use --cpu for the reduced mode" in result.stderr
