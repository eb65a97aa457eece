"""The watchdog ends a rank that makes no progress, under the limit of what it is doing: the
collectives' timeout, or the longer limits of loading and saving a checkpoint; and the Slurm
requeue script stops requeueing a run that keeps hanging."""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from megatron_dga.training.watchdog import Watchdog
    dog = Watchdog(rank=3, timeout_seconds=0.5, margin_seconds=0.5)
    with dog.watch("checkpoint save at iteration 7", limit_seconds=4.0):
        time.sleep(2.5)  # longer than the default limit (1 s), within the save's (4.5 s)
    print("saved", flush=True)
    dog.now("iteration 8")
    time.sleep(5)
    print("not reached", flush=True)
""")


def test_a_save_has_its_own_limit_and_a_stalled_iteration_is_ended():
    result = subprocess.run([sys.executable, "-c", SCRIPT.format(repo=REPO)], capture_output=True, text=True,
                            timeout=60)
    assert "saved" in result.stdout and "not reached" not in result.stdout
    assert result.returncode == 75
    assert "rank 3: no progress for" in result.stderr and "during iteration 8" in result.stderr


def run_requeue_script(tmp_path, status, before, after, stalled=None):
    """launch/slurm_requeue.sbatch with srun and scontrol replaced by stand-ins."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    tracker = checkpoints / "latest_checkpointed_iteration.txt"
    tracker.write_text(f"{before}\n")
    if stalled is not None:
        (checkpoints / ".stalled_restarts").write_text(f"{stalled}\n")
    (bin_dir / "srun").write_text(f"#!/bin/bash\necho {after} > {tracker}\nexit {status}\n")
    (bin_dir / "scontrol").write_text(f"#!/bin/bash\n[[ $1 == requeue ]] && touch {tmp_path}/requeued\n"
                                      "echo node-01\n")
    for tool in ("srun", "scontrol"):
        os.chmod(bin_dir / tool, 0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_JOB_ID="1", SLURM_JOB_NODELIST="node-01",
               CHECKPOINTS=str(checkpoints), TRAIN_ITERS="100", MAX_STALLED_RESTARTS="2")
    result = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm_requeue.sbatch")], env=env,
                            capture_output=True, text=True, timeout=60)
    return result, (tmp_path / "requeued").exists()


def test_requeues_stop_when_starts_keep_hanging_without_progress(tmp_path):
    _, requeued = run_requeue_script(tmp_path, status=75, before=40, after=40, stalled=0)
    assert requeued  # the first hang: resumed from the last checkpoint
    (tmp_path / "requeued").unlink()
    _, requeued = run_requeue_script(tmp_path, status=75, before=40, after=40, stalled=2)
    assert not requeued  # a third hang in a row without a new checkpoint
    result, requeued = run_requeue_script(tmp_path, status=75, before=40, after=50, stalled=2)
    assert requeued  # a hang after progress starts the count again
    assert (tmp_path / "checkpoints" / ".stalled_restarts").read_text().strip() == "0"
