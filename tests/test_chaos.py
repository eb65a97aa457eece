"""Five SIGKILLs at random moments, each followed by a resume with the same command: the run
ends bitwise equal to an uninterrupted one (parameters, optimizer state, mixture, metrics),
with no iteration logged twice. bench/chaos.py runs the long version (50 kills)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
from chaos import chaos, compare, straight_run  # noqa: E402

from pretrain_helpers import make_domains  # noqa: E402

KILLS, SAVE_INTERVAL = 5, 3
ITERS = SAVE_INTERVAL * 3 * KILLS


@pytest.mark.parametrize("layout", ["dp2-zero1", "pp2"])
def test_a_run_killed_five_times_ends_as_if_never_killed(tmp_path, layout):
    data = str(tmp_path / "data")
    make_domains(data)
    straight_run(data, str(tmp_path / "straight"), layout, ITERS, SAVE_INTERVAL)
    figures = chaos(data, str(tmp_path / "chaos"), layout, ITERS, SAVE_INTERVAL, KILLS, seed=1)
    assert figures["kills"] == KILLS
    assert compare(str(tmp_path / "straight"), str(tmp_path / "chaos"), ITERS) == []
