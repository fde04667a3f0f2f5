"""The feedback_aggregates view on Feast (SQLite, and redis-server where a write that is not
newer is dropped): counts survive batches and a rebuild from the log."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.feast_store import FeastStore
from plugin.core.feedback import aggregate, merge_aggregates
from plugin.settings import load_settings
from tests.support.feedback import record as feedback_record


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def feast(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FeastStore]:
    feast_settings: dict[str, Any] = {
        "online_store": request.param,
        "sqlite_path": tmp_path / "online.db",
        "registry_path": tmp_path / "registry.db",
    }
    redis: dict[str, Any] = {}
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        redis = {"host": server.host, "port": server.port, "db": 13}
        server.client(db=13).flushdb()
    store = FeastStore(load_settings(var_dir=tmp_path, feast=feast_settings, redis=redis))
    store.apply()
    yield store


def test_counts_accumulate_across_batches_even_with_older_event_times(feast: FeastStore) -> None:
    r = feedback_record
    assert feast.read_feedback_aggregates(["2,1>7"]) == {}
    first = aggregate([r("u1", 50, (2, 1), 7, 7, True), r("u2", 51, (2, 1), 7, 3, False)])
    feast.write_feedback_aggregates(merge_aggregates({}, first))
    # The next batch's answer is older (another partition lagged): it must still land.
    second = aggregate([r("u3", 10, (2, 1), 7, 7, False), r("u4", 11, (5,), 6, 6, True)])
    stored = feast.read_feedback_aggregates(sorted(second))
    feast.write_feedback_aggregates(merge_aggregates(stored, second))
    found = feast.read_feedback_aggregates(["2,1>7", "5>6", "9>9"])
    assert set(found) == {"2,1>7", "5>6"}
    row = found["2,1>7"]
    assert (row.answered, row.engaged, row.engaged_positive, row.novel) == (3, 2, 1, 3)
    assert row.positive_rate == pytest.approx(1 / 3)
    assert row.model_version == "best-of-n-v1-cat"
    assert found["5>6"].engaged_positive == 1
