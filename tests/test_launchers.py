"""The deepspeed launcher starts the ranks: one node with --num_gpus 2 (gloo processes on a
machine without CUDA), and two "nodes" on loopback with a hostfile, --no_ssh and --node_rank."""

import os
import subprocess

from pretrain_helpers import SMALL_MODEL, _env, deepspeed_command, free_port, make_domains, read_metrics, run


def short_run(manifest, metrics_file, extra=()):
    return ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", "3", "--log-interval", "1", "--eval-interval", "3", "--eval-iters", "1",
            "--split", "90,10,0", "--metrics-file", metrics_file, *extra]


def test_deepspeed_launcher_single_node(tmp_path):
    manifest = make_domains(str(tmp_path / "data"))
    metrics = str(tmp_path / "metrics.jsonl")
    result = run(deepspeed_command(short_run(manifest, metrics, ["--tensor-model-parallel-size", "2"]),
                                   ["--num_gpus", "2", "--master_port", str(free_port())]))
    assert "layout TP=2 PP=1 DP=1" in result.stdout
    assert [r["iteration"] for r in read_metrics(metrics)] == [1, 2, 3]


def test_two_nodes_on_loopback(tmp_path):
    manifest = make_domains(str(tmp_path / "data"))
    metrics = str(tmp_path / "metrics.jsonl")
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("node-a slots=1\nnode-b slots=1\n")
    port = str(free_port())
    args = short_run(manifest, metrics)

    def launcher(node_rank):
        return deepspeed_command(args, ["--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node_rank),
                                        "--master_addr", "127.0.0.1", "--master_port", port])

    second = subprocess.Popen(launcher(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    first = run(launcher(0))
    second_out, _ = second.communicate(timeout=300)
    assert second.returncode == 0, second_out[-5000:]
    # The logging rank is the last one, on the second node: it saw the whole world.
    assert "layout TP=1 PP=1 DP=2" in second_out
    assert [r["iteration"] for r in read_metrics(metrics)] == [1, 2, 3]
    assert first.returncode == 0 and os.path.getsize(metrics) > 0
