"""The profile's areas: a built-in's time is counted where it was called from."""

from __future__ import annotations

import cProfile
import pstats
from datetime import UTC, datetime

from plugin.bench.profile import summarise
from plugin.core.planning import PlanRequest, best_of_n

PLAN_TABLE = "plan table (lookups, best-of-n select)"


def test_a_builtins_time_goes_to_the_area_of_its_caller() -> None:
    request = PlanRequest("u", (0,), frozenset({3}), datetime(2020, 1, 1, tzinfo=UTC))
    candidates = list(range(300))
    scores = [float(c % 7) for c in candidates]
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(200):
        best_of_n(request, candidates, scores, "v")
    profile.disable()
    areas = {a["area"]: a["seconds"] for a in summarise(profile)["areas"]}
    raw = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    sort_own = sum(e[2] for f, e in raw.items() if f[2] == "<method 'sort' of 'list' objects>")
    assert sort_own > 0
    # list.sort (called by best_of_n) is counted in the plan table, not in "other", which
    # keeps only this test's own loop and the profiler's disable call.
    assert areas[PLAN_TABLE] >= sort_own
    assert areas.get("other", 0.0) < sort_own
