"""Helpers for tests that train: small synthetic domains in real Megatron files, and runs of
`megatron_dga.pretrain` under torchrun or the deepspeed launcher."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder, get_bin_path, get_idx_path

from megatron_dga.data.manifest import DomainEntry, DomainsManifest, TokenizerInfo

VOCAB = 256
EOD = VOCAB - 1

# The model flags Megatron requires, for tests that only parse a command line (the config's own defaults).
TOY_MODEL = ["--num-layers", "2", "--hidden-size", "128", "--num-attention-heads", "4", "--seq-length", "128"]

# A small model that every layout in the tests can hold: 4 heads for TP=2, 2 layers for PP=2.
SMALL_MODEL = [
    "--num-layers", "2", "--hidden-size", "64", "--num-attention-heads", "4", "--seq-length", "32",
    "--make-vocab-size-divisible-by", "128",
]


def write_domain(prefix: str, documents: Sequence[np.ndarray]) -> int:
    builder = IndexedDatasetBuilder(get_bin_path(prefix), dtype=np.uint16)
    for doc in documents:
        builder.add_document(np.asarray(doc, dtype=np.uint16), [len(doc)])
    builder.finalize(get_idx_path(prefix))
    return int(sum(len(d) for d in documents))


def synthetic_documents(rng: np.random.Generator, token_range, count: int, min_len=20, max_len=200,
                        kind: str = "motif"):
    """Documents of one domain, over the domain's own token range, ending with the EOD token:
    "motif": a short random motif repeated (learnt within a few steps by copying);
    "ramp": an arithmetic progression with a per-document step, wrapping in the range;
    "noise": uniform random tokens (nothing to learn but the range)."""
    low, high = token_range
    docs = []
    for _ in range(count):
        length = int(rng.integers(min_len, max_len))
        if kind == "motif":
            doc = np.resize(rng.integers(low, high, size=int(rng.integers(3, 9))), length)
        elif kind == "ramp":
            start, step = int(rng.integers(low, high)), int(rng.integers(1, 4))
            doc = low + (start - low + step * np.arange(length)) % (high - low)
        elif kind == "noise":
            doc = rng.integers(low, high, size=length)
        else:
            raise ValueError(kind)
        doc[-1] = EOD
        docs.append(doc)
    return docs


def make_domains(directory: str, num_domains: int = 3, docs_per_domain: int = 60, seed: int = 0,
                 kinds=None) -> str:
    """`num_domains` domains of distinguishable synthetic text and their domains.json."""
    os.makedirs(directory, exist_ok=True)
    rng = np.random.default_rng(seed)
    width = (VOCAB - 1) // num_domains
    entries = []
    for d in range(num_domains):
        name = f"dom{d}"
        kind = kinds[d] if kinds else "motif"
        docs = synthetic_documents(rng, (d * width, (d + 1) * width), docs_per_domain, kind=kind)
        prefix = os.path.join(directory, f"{name}_text_document")
        tokens = write_domain(prefix, docs)
        entries.append(DomainEntry(name, os.path.basename(prefix), len(docs), tokens))
    path = os.path.join(directory, "domains.json")
    DomainsManifest(TokenizerInfo("synthetic", None, VOCAB, EOD), entries).save(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR"):
        env.pop(key, None)
    env.update(extra or {})
    return env


def torchrun_command(nproc: int, args: Sequence[str]) -> List[str]:
    if nproc == 1:
        return [sys.executable, "-m", "megatron_dga.pretrain", *args]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "megatron_dga.pretrain", *args]


def driver_command(driver: str, nproc: int, driver_args: Sequence[str], args: Sequence[str]) -> List[str]:
    """The launch of `torchrun_command`, running a test driver script instead of the trainer."""
    command = torchrun_command(nproc, args)
    module_index = command.index("megatron_dga.pretrain")
    return command[: module_index - 1] + [driver, *driver_args] + command[module_index + 1:]


def deepspeed_command(args: Sequence[str], launcher_args: Sequence[str]) -> List[str]:
    launcher = os.path.join(os.path.dirname(sys.executable), "deepspeed")
    return [launcher, *launcher_args, "--module", "megatron_dga.pretrain", *args]


def run(command: Sequence[str], expect_ok: bool = True, timeout: int = 600, env=None) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(env))
    if expect_ok and result.returncode != 0:
        raise AssertionError(
            f"command failed ({result.returncode}): {' '.join(command)}\n--- stdout\n{result.stdout[-5000:]}"
            f"\n--- stderr\n{result.stderr[-8000:]}"
        )
    return result


def pretrain(args: Sequence[str], nproc: int = 1, **kwargs) -> subprocess.CompletedProcess:
    return run(torchrun_command(nproc, args), **kwargs)


def read_metrics(path: str, kind: str = "train") -> List[dict]:
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [r for r in records if r["type"] == kind]


def losses_by_iteration(path: str) -> Dict[int, float]:
    return {r["iteration"]: r["lm_loss"] for r in read_metrics(path)}


# ---- processes of a running job (fault tests and benchmarks) ----------------------------------
def start(command):
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def rank_processes(launcher: subprocess.Popen, nproc: int, timeout: float = 120.0):
    """{rank: psutil.Process} of the training processes under a launcher."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline:
        ranks = {}
        for child in psutil.Process(launcher.pid).children(recursive=True):
            try:
                env = child.environ()
                if "megatron_dga.pretrain" in " ".join(child.cmdline()) and "RANK" in env \
                        and "LOCAL_RANK" in env and "torch.distributed.run" not in " ".join(child.cmdline()):
                    ranks[int(env["RANK"])] = child
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        if len(ranks) == nproc:
            return ranks
        time.sleep(0.2)
    raise AssertionError(f"{nproc} rank processes did not start")


def wait_for_iteration(metrics_file: str, iteration: int, launcher, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(metrics_file) and any(r["iteration"] >= iteration for r in read_metrics(metrics_file)):
            return
        assert launcher.poll() is None, launcher.communicate()
        time.sleep(0.2)
    raise AssertionError(f"iteration {iteration} not reached")


def seconds_to_exit(launcher, limit: float) -> float:
    start_time = time.time()
    try:
        launcher.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        launcher.kill()
        raise AssertionError(f"the job still runs {limit} s later")
    return time.time() - start_time
