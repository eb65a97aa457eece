"""Each test starts from the environment the suite started with.

Tests that start torch.distributed in the pytest process set MASTER_ADDR and MASTER_PORT (and a
run started in-process sets RANK and WORLD_SIZE, as torchrun would). Left in os.environ, they
would reach every later subprocess: a later launch would then bind a port already taken, or
take itself for a rank of a finished world. The snapshot is taken when this file is imported,
before any test module or fixture runs, so that module-scoped fixtures cannot leak either."""
import os

import pytest

SUITE_ENVIRONMENT = dict(os.environ)


@pytest.fixture(autouse=True)
def _restore_environment():
    yield
    for name in set(os.environ) - set(SUITE_ENVIRONMENT) - {"PYTEST_CURRENT_TEST"}:  # pytest's own
        del os.environ[name]
    os.environ.update(SUITE_ENVIRONMENT)
