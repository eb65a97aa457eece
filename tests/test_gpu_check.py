"""bench/gpu_check.sh, the script for a lent GPU, runs end to end in its reduced CPU mode."""

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


def test_cpu_mode_prints_every_figure():
    result = run("--cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert re.search(r"throughput: \d+ tokens/s, [\d.]+ TFLOP/s of model FLOPs, MFU [\d.]+", out), out
    assert re.search(r"peak memory: [\d.]+ GiB measured, [\d.]+ GiB estimated", out), out
    worst = float(re.search(r"largest relative difference ([\d.e+-]+)", out).group(1))
    assert worst < 1e-4  # fp32: SDPA and megatron-core's attention agree
    assert re.search(r"DGA overhead: measured ratio [\d.]+ .* measured / ideal = [\d.]+", out), out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gpu_mode_without_a_gpu_says_so():
    result = run()
    assert result.returncode == 2
    assert "no CUDA GPU here; use --cpu for the reduced mode" in result.stderr
