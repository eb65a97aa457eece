"""Faults a cluster inflicts on a run: a rank that dies or hangs ends the whole job quickly,
preemption (SIGTERM) and time limits save and resume exactly, a diverging loss stops the run
without touching its last checkpoint, a full disk during a save keeps the previous checkpoint."""

import os
import signal
import subprocess

import psutil
import pytest

from megatron_dga.training.checkpointing import read_tracker
from pretrain_helpers import (
    SMALL_MODEL,
    _env,
    deepspeed_command,
    free_port,
    losses_by_iteration,
    make_domains,
    pretrain,
    rank_processes,
    run,
    read_metrics,
    seconds_to_exit,
    start,
    torchrun_command,
    wait_for_iteration,
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return make_domains(str(tmp_path_factory.mktemp("faults-data")))


def train_args(manifest, run_dir, iters, extra=()):
    return ["--domains-manifest", manifest, *SMALL_MODEL, "--micro-batch-size", "2", "--global-batch-size", "4",
            "--train-iters", str(iters), "--lr", "1e-3", "--split", "90,10,0", "--eval-interval", "1000",
            "--log-interval", "1", "--metrics-file", os.path.join(run_dir, "metrics.jsonl"), *extra]


@pytest.mark.parametrize("launcher_kind", ["torchrun", "deepspeed"])
def test_a_killed_rank_ends_the_job(tmp_path, manifest, launcher_kind):
    args = train_args(manifest, str(tmp_path), 100000)
    command = torchrun_command(2, args) if launcher_kind == "torchrun" else \
        deepspeed_command(args, ["--num_gpus", "2", "--master_port", str(free_port())])
    launcher = start(command)
    wait_for_iteration(str(tmp_path / "metrics.jsonl"), 2, launcher)
    rank_processes(launcher, 2)[1].send_signal(signal.SIGKILL)
    seconds = seconds_to_exit(launcher, 60)
    assert launcher.returncode != 0
    assert seconds < 30, seconds


def test_a_hung_rank_fails_the_job_within_the_timeout(tmp_path, manifest):
    # --distributed-timeout-minutes 0.1: 6 s. The waiting rank's collective times out, it names
    # itself and the operation, and the launcher ends the stopped rank.
    launcher = start(torchrun_command(2, train_args(manifest, str(tmp_path), 100000,
                                                     ["--distributed-timeout-minutes", "0.1"])))
    wait_for_iteration(str(tmp_path / "metrics.jsonl"), 2, launcher)
    ranks = rank_processes(launcher, 2)
    ranks[1].send_signal(signal.SIGSTOP)
    try:
        seconds = seconds_to_exit(launcher, 120)
    finally:
        for process in ranks.values():
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
    _, stderr = launcher.communicate()
    assert launcher.returncode != 0
    assert seconds < 6 + 45, seconds
    assert "rank 0: iteration" in stderr and "failed:" in stderr, stderr[-3000:]


def test_sigterm_saves_and_the_resumed_run_is_the_same_run(tmp_path, manifest):
    # The run is far longer than the test (a fast machine must not finish before the signal
    # lands); both runs then end a few iterations past the stop with --exit-interval.
    iters = 100000
    resumed = str(tmp_path / "resumed")
    checkpoints = os.path.join(resumed, "checkpoints")
    args = train_args(manifest, resumed, iters, ["--save", checkpoints, "--load", checkpoints,
                                                  "--exit-signal-handler"])
    launcher = start(torchrun_command(2, args))
    ranks = rank_processes(launcher, 2).values()  # found first: the run may be fast
    wait_for_iteration(os.path.join(resumed, "metrics.jsonl"), 5, launcher)
    for process in ranks:  # held still while each gets its signal, so that none finishes first
        process.send_signal(signal.SIGSTOP)
    for process in ranks:  # Slurm signals every task
        process.send_signal(signal.SIGTERM)
    for process in ranks:
        process.send_signal(signal.SIGCONT)
    seconds_to_exit(launcher, 120)
    stdout, stderr = launcher.communicate()
    assert launcher.returncode == 0, stderr[-3000:]
    stopped_at = read_tracker(checkpoints)
    assert 5 <= stopped_at < iters and "SIGTERM received" in stdout
    end = stopped_at + 5
    pretrain([*args, "--exit-interval", str(end)], nproc=2)
    straight = str(tmp_path / "straight")
    pretrain(train_args(manifest, straight, iters, ["--exit-interval", str(end)]), nproc=2)
    a, b = losses_by_iteration(os.path.join(straight, "metrics.jsonl")), \
        losses_by_iteration(os.path.join(resumed, "metrics.jsonl"))
    assert sorted(a) == sorted(b) == list(range(1, end + 1))
    for it in range(1, end + 1):
        assert b[it] == pytest.approx(a[it], rel=1e-6), it


def test_exit_duration_saves_and_exits(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    result = pretrain(train_args(manifest, str(tmp_path), 100000, ["--save", checkpoints,
                                                                   "--exit-duration-in-mins", "0.05"]))
    assert "--exit-duration-in-mins 0.05 reached" in result.stdout
    assert 0 < read_tracker(checkpoints) < 100000


def test_a_diverging_loss_stops_without_saving(tmp_path, manifest):
    # The learning rate warms up towards 1e30: iteration 1 trains at 0, iteration 2 at 1e27,
    # which throws Adam's first steps of about lr far away, and iteration 3's logits overflow.
    checkpoints = str(tmp_path / "checkpoints")
    result = pretrain(train_args(manifest, str(tmp_path), 6, ["--save", checkpoints, "--save-interval", "1",
                                                              "--lr", "1e30", "--lr-warmup-iters", "1000",
                                                              "--lr-decay-iters", "2000"]), expect_ok=False)
    assert result.returncode == 3, result.stderr[-3000:]
    assert "error: iteration 3: the loss is nan" in result.stderr, result.stderr[-3000:]
    assert "its global batch drew from dom" in result.stderr
    assert "Nothing was saved; the last checkpoint is iteration 2" in result.stderr
    assert read_tracker(checkpoints) == 2
    assert max(r["iteration"] for r in read_metrics(str(tmp_path / "metrics.jsonl"))) == 2


def test_a_full_disk_during_a_save_keeps_the_previous_checkpoint(tmp_path, manifest):
    checkpoints = str(tmp_path / "checkpoints")
    args = train_args(manifest, str(tmp_path), 4, ["--save", checkpoints, "--save-interval", "2"])
    pretrain([*args[:args.index("--train-iters") + 1], "2", *args[args.index("--train-iters") + 2:]])
    assert read_tracker(checkpoints) == 2
    # Files of at most 64 KB: the model's checkpoint file does not fit, as on a full disk.
    command = ["bash", "-c", 'ulimit -f 64 && exec "$@"', "_",
               *torchrun_command(1, [*args, "--load", checkpoints])]
    result = subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=600)
    assert result.returncode != 0
    assert f"saving checkpoint {checkpoints}/iter_0000004 failed" in result.stderr, result.stderr[-3000:]
    assert "the latest checkpoint is still iteration 2" in result.stderr
    assert read_tracker(checkpoints) == 2
    assert sorted(os.listdir(checkpoints)) == ["iter_0000002", "latest_checkpointed_iteration.txt"]


def test_start_up_never_waits_on_a_torch_extension_build_lock(tmp_path, manifest):
    """DeepSpeed JIT-builds a shared-memory op for inference all-reduces at start-up, under a
    torch lock file; a rank killed by its launcher while holding the lock (any failed 2-rank
    start) left it behind, and every later start waited on it. Training never uses that op:
    a start on the CPU must finish while a fresh lock is held."""
    extensions = tmp_path / "extensions"
    lock = extensions / "deepspeed_shm_comm" / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    args = train_args(manifest, str(tmp_path / "run"), 2)
    result = run(torchrun_command(1, args), env={"TORCH_EXTENSIONS_DIR": str(extensions)}, timeout=120)
    assert result.returncode == 0
    assert lock.exists()
