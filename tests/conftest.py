"""Each test starts from the environment the suite started with.

A run started in-process (one rank, no launcher) sets RANK, WORLD_SIZE and MASTER_ADDR in
os.environ, as torchrun would; left there, they would reach every later subprocess and launch."""
import os

import pytest


@pytest.fixture(autouse=True)
def _restore_environment():
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
