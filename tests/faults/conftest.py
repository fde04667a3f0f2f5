"""Fixtures of the fault tests: one workbench (catalog, published version, events) per session.

Each test starts the servers it breaks (redis-server, tansu, tritonserver) itself, on free
127.0.0.1 ports, and stops them; only the session's tansu is shared where the broker is not
the thing under test.
"""

from __future__ import annotations

import pytest

from tests.support.workbench import Workbench, make_workbench

# Enough events for several batches per phase, few enough for a 2-CPU budget.
EVENTS = 1200


@pytest.fixture(scope="session")
def fault_bench(tmp_path_factory: pytest.TempPathFactory) -> Workbench:
    return make_workbench(tmp_path_factory.mktemp("faults"), EVENTS)
