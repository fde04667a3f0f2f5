"""The synthetic platform workload: seeded, shaped as documented, and valid worker input."""

from __future__ import annotations

from collections import Counter
from itertools import islice

import pytest

from plugin.core.events import WatchEvent, parse_event
from plugin.data.platform import PlatformShape, PlatformWorkload

SMALL = PlatformShape(users=50_000, items=5_000, clusters=50, parents=5, concurrent_sessions=200)


def test_the_same_seed_gives_the_same_catalog_and_events() -> None:
    first, second = PlatformWorkload(SMALL), PlatformWorkload(SMALL)
    assert first.catalog().version == second.catalog().version
    assert list(first.events(2_000)) == list(second.events(2_000))
    other = PlatformWorkload(PlatformShape(**{**SMALL.as_dict(), "seed": 16}))  # type: ignore[arg-type]
    assert list(islice(other.events(50), 50)) != list(islice(first.events(50), 50))


def test_the_catalog_has_every_item_in_one_of_the_leaf_clusters() -> None:
    catalog = PlatformWorkload(SMALL).catalog()
    assert len(catalog) == 50 and len(catalog.parents) == 5
    assert len(catalog.item_to_cluster) == 5_000
    assert all(cluster.size >= 1 for cluster in catalog.clusters)
    assert sum(cluster.size for cluster in catalog.clusters) == 5_000
    assert PlatformShape().histories == 250_000


def test_events_are_valid_skewed_interleaved_and_bursty() -> None:
    workload = PlatformWorkload(SMALL)
    catalog = workload.catalog()
    stream = list(workload.events(20_000))
    events = []
    for key, payload in stream:
        parsed = parse_event(payload)
        assert isinstance(parsed, WatchEvent), parsed
        assert parsed.user_id == key
        assert catalog.cluster_of(parsed.item_id) is not None
        events.append(parsed)
    items = Counter(e.item_id for e in events)
    # Zipf with exponent 1 over 5,000 items: the top 1% get H(50) / H(5000) = 49.5% of the
    # draws (draws within a cluster follow the same weights).
    top = sum(count for _, count in items.most_common(50))
    assert 0.42 < top / len(events) < 0.58
    # Interleaved: a 500-event batch holds about every open session's user (200) and those of
    # the sessions opened meanwhile ...
    assert len({e.user_id for e in events[:500]}) > SMALL.concurrent_sessions
    # ... while each user's events come in bursts, seconds apart, in time order.
    by_user: dict[str, list[WatchEvent]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    sessions = [v for v in by_user.values() if len(v) >= 3]
    assert sessions
    for user_events in sessions:
        times = [e.event_time for e in user_events]
        assert times == sorted(times)
    positive = sum(1 for e in events if (e.rating or 0) >= 4) / len(events)
    assert positive == pytest.approx(0.7, abs=0.03)


def test_a_shape_that_cannot_exist_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        PlatformShape(items=10, clusters=50)
    with pytest.raises(ValueError, match="stay_in_cluster"):
        PlatformShape(stay_in_cluster=1.5)
