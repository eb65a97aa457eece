"""Every file of a checkpoint, DeepSpeed's own included, is flushed to disk before the staging
folder gets its final name, and a save that fails keeps the previous checkpoint."""

import os

import pytest
import torch
import torch.distributed as dist

from megatron_dga.training import checkpointing
from megatron_dga.training.checkpointing import CheckpointError, Checkpointer, read_tracker


class FakeEngine:
    """What the Checkpointer asks of DeepSpeed's engine: files written into the staging folder."""

    def __init__(self, fail=False):
        self.fail = fail

    def save_checkpoint(self, directory, tag, client_state, save_latest):
        os.makedirs(os.path.join(directory, tag), exist_ok=True)
        with open(os.path.join(directory, tag, "mp_rank_00_model_states.pt"), "wb") as f:
            torch.save({"weights": torch.ones(3)}, f)
        if self.fail:
            raise OSError(28, "No space left on device")


class Context:
    rank = 0


@pytest.fixture
def group():
    # a store of its own, not MASTER_ADDR/MASTER_PORT, which later subprocesses would inherit
    store = dist.TCPStore("127.0.0.1", 0, 1, is_master=True)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_deepspeed_files_are_flushed_before_the_rename(tmp_path, group, monkeypatch):
    flushed, order = set(), []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        flushed.add(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def replace(src, dst):
        order.append((src, set(flushed)))
        real_replace(src, dst)

    monkeypatch.setattr(checkpointing.os, "replace", replace)
    monkeypatch.setattr("megatron_dga.files.os.fsync", fsync)
    Checkpointer(Context(), FakeEngine()).save(str(tmp_path), 7, {}, {"iteration": 7})
    staging = str(tmp_path / "iter_0000007.partial")
    seen_at_rename = next(seen for src, seen in order if src == staging)
    assert os.path.join(staging, "mp_rank_00_model_states.pt") in seen_at_rename
    assert staging in seen_at_rename  # the folder's own entries too
    assert read_tracker(str(tmp_path)) == 7


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, group):
    Checkpointer(Context(), FakeEngine()).save(str(tmp_path), 2, {}, {"iteration": 2})
    with pytest.raises(CheckpointError, match=r"saving checkpoint .*iter_0000004 failed: rank 0: OSError: .*No space "
                                              r"left on device \(is the file system full\?\); the latest checkpoint is "
                                              r"still iteration 2"):
        Checkpointer(Context(), FakeEngine(fail=True)).save(str(tmp_path), 4, {}, {"iteration": 4})
    assert read_tracker(str(tmp_path)) == 2
    assert sorted(os.listdir(tmp_path)) == ["iter_0000002", "latest_checkpointed_iteration.txt"]
