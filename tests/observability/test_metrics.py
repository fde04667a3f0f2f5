"""A batch's latencies observed at once export the same series as one observe per sample."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from plugin.observability.metrics import BatchHistogram

BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0)


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_observe_many_equals_observing_one_sample_at_a_time() -> None:
    rng = random.Random(15)
    # Bucket edges exactly (a sample on a bound counts in that bucket), past the last bound,
    # zero and negative amounts, NaN (in the sum, in no bucket), and an empty batch.
    batches = [
        [*BUCKETS, 0.0, -0.5, 20.0, math.nan],
        [rng.expovariate(4.0) for _ in range(500)],
        [],
    ]
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    plain = Histogram("latency", "seconds", buckets=BUCKETS, registry=one_by_one)
    batched = BatchHistogram("latency", "seconds", buckets=BUCKETS, registry=at_once)
    for batch in batches:
        for amount in batch:
            plain.observe(amount)
        batched.observe_many(batch)
    expected, got = _samples(one_by_one), _samples(at_once)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == value or math.isclose(got[key], value, rel_tol=1e-12), key
    # Every sample counted once, but NaN: the count is the sum of the buckets.
    assert got[("latency_count", ())] == sum(len(batch) for batch in batches) - 1


def test_observe_many_works_on_labelled_children() -> None:
    registry = CollectorRegistry()
    labelled = BatchHistogram("step", "seconds", ["op"], buckets=BUCKETS, registry=registry)
    labelled.labels(op="read").observe_many([0.005, 0.5])
    assert registry.get_sample_value("step_bucket", {"op": "read", "le": "0.01"}) == 1
    assert registry.get_sample_value("step_count", {"op": "read"}) == 2
