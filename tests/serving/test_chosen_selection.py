"""The version's chosen n, temperature and weights on the serving path, without a server:
the contract's N=0 / TEMPERATURE=0, the planner manifest, and the Triton client's weight and
window term."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from plugin.adapters.plan_cache import CachedPlanner
from plugin.adapters.triton_planner import TritonPlanner
from plugin.core.planning import (
    HistoryRanking,
    PlanRequest,
    Selection,
    WindowTransitions,
    select,
)
from plugin.models.repository import (
    MANIFEST,
    PLANNER,
    ModelRepository,
    chosen_selection,
    transitions_record,
)
from plugin.models.window import WindowFit
from plugin.serving.batch import sample_rows
from plugin.serving.contract import (
    RequestError,
    SampledCandidates,
    planner_inputs,
    planner_rows,
)
from plugin.settings import TritonSettings
from tests.support.serving import CLUSTERS, T0, in_process, models, request


def test_zero_n_and_temperature_take_the_versions_chosen_values() -> None:
    arrays = planner_inputs([(3, 5), (7,)], [(3,), ()], n=0, temperature=0.0, seed=7)
    rows = planner_rows(arrays, CLUSTERS, default_n=8, default_temperature=3.0)
    assert [(r.n, r.temperature) for r in rows] == [(8, 3.0), (8, 3.0)]
    explicit = planner_inputs([(3, 5)], [()], n=4, temperature=1.5, seed=7)
    row = planner_rows(explicit, CLUSTERS, default_n=8, default_temperature=3.0)[0]
    assert (row.n, row.temperature) == (4, 1.5)  # a named value wins over the version's
    with pytest.raises(RequestError, match="N=0"):
        planner_rows(arrays, CLUSTERS)  # a version without a choice cannot fill N=0


def test_publishing_writes_the_chosen_selection_into_the_planner_manifest(tmp_path: Path) -> None:
    novelty, alignment = models(1)
    repository = ModelRepository(tmp_path)
    chosen = {"n": 8, "temperature": 3.0, "weight": 0.25}
    version = repository.write(
        novelty,
        alignment,
        {"catalog_version": "c0ffee", "gate": {"passed": True}, "selection": {"chosen": chosen}},
    )
    repository.prepare_serving(version)
    manifest = (tmp_path / PLANNER / str(version) / MANIFEST).read_text()
    assert '"weight": 0.25' in manifest and '"temperature": 3.0' in manifest
    assert '"window_weight": 0.0' in manifest  # a version from before the window term


def test_a_versions_window_term_round_trips_through_its_manifest(tmp_path: Path) -> None:
    # Quarters: the manifest rounds the matrix to 6 decimals, these survive it exactly.
    matrix = [[((3 * source + to) % 5) / 4 for to in range(CLUSTERS)] for source in range(CLUSTERS)]
    window = WindowFit(WindowTransitions.from_matrix(matrix), l2=1e-4, steps=12)
    chosen = {"n": 8, "temperature": 1.0, "weight": 0.5, "window_weight": 2.0}
    manifest = {
        "catalog_version": "c0ffee",
        "gate": {"passed": True},
        "selection": {"chosen": chosen},
        "window_transitions": transitions_record(window, moves=100),
    }
    novelty, alignment = models(1)
    repository = ModelRepository(tmp_path)
    version = repository.write(novelty, alignment, manifest)
    selection = chosen_selection(repository.manifest(version))
    assert selection == Selection(8, 1.0, 0.5, 2.0, window.transitions)
    assert repository.manifest(version)["window_transitions"]["steps"] == 12
    repository.prepare_serving(version)
    assert '"window_weight": 2.0' in (tmp_path / PLANNER / str(version) / MANIFEST).read_text()
    # A recency-weighted window keeps its decay; a version from before the decay (no
    # "decay" in its record) loads as the uniform mean it was fit with.
    decayed = WindowFit(WindowTransitions.from_matrix(matrix, decay=0.8), l2=1e-4, steps=12)
    record = transitions_record(decayed, moves=100)
    manifest["window_transitions"] = record
    assert chosen_selection(manifest) == Selection(8, 1.0, 0.5, 2.0, decayed.transitions)
    del record["decay"]
    assert chosen_selection(manifest) == Selection(8, 1.0, 0.5, 2.0, window.transitions)
    # A version of the counted window term (sparse counts, no matrix) must be retrained.
    manifest["window_transitions"] = {"n_clusters": CLUSTERS, "counts": [[0, 1, 5]]}
    with pytest.raises(ValueError, match="window_transitions has no matrix"):
        chosen_selection(manifest)
    del manifest["window_transitions"]
    with pytest.raises(ValueError, match="no window_transitions"):
        chosen_selection(manifest)


class ScriptedTriton(TritonPlanner):
    """The client with the network replaced by the in-process batch logic (version 3)."""

    def __init__(self, chosen: Selection) -> None:
        super().__init__(
            TritonSettings(),
            n=None,
            temperature=None,
            seed=7,
            n_clusters=CLUSTERS,
            label=lambda v: f"v{v}",
            selection=lambda v: chosen,
        )
        self.chosen = chosen
        self.sent: list[tuple[int, float | None]] = []

    async def _sample(
        self,
        histories: Sequence[Sequence[int]],
        excluded: Sequence[Sequence[int]],
        n: int,
        names: Sequence[str],
    ) -> list[tuple[str, SampledCandidates]]:
        self.sent.append((n, self.temperature))
        arrays = planner_inputs(histories, excluded, n, self.temperature or 0.0, self.seed)
        rows = planner_rows(arrays, CLUSTERS, self.chosen.n, self.chosen.temperature)
        novelty, alignment = models(1)
        label = self._resolve(3)
        return [(label, s) for s in sample_rows(rows, novelty, alignment, 2)]


# A window model where users who were in cluster c go mostly to c + 1 (a strong term).
STEP = WindowTransitions.from_matrix(
    [
        [2.0 if to == (source + 1) % CLUSTERS else -1.0 for to in range(CLUSTERS)]
        for source in range(CLUSTERS)
    ]
)


def ordered(user: str, window: tuple[int, ...]) -> PlanRequest:
    """A request whose window is most recent first (its first two clusters the history), as
    every selecting path builds it."""
    return PlanRequest(user, window[:2], frozenset(window), T0, window)


@pytest.mark.parametrize(
    ("weight", "window_weight", "decay"),
    [(1.0, 0.0, 1.0), (0.5, 0.0, 1.0), (0.0, 0.0, 1.0), (0.5, 4.0, 1.0), (0.5, 4.0, 0.5)],
)
def test_triton_client_plans_like_the_in_process_planner_at_the_chosen_weight(
    weight: float, window_weight: float, decay: float
) -> None:
    transitions = WindowTransitions(STEP.scores_by_target, decay) if window_weight else None
    chosen = Selection(6, 2.0, weight, window_weight, transitions)
    client = ScriptedTriton(chosen)
    batch = [
        ordered(f"u{i}", (i % CLUSTERS, (i + 5) % CLUSTERS, (i + 3) % CLUSTERS, i + 20))
        for i in range(12)
    ]
    plans = asyncio.run(client._plan(batch, None))
    assert client.sent == [(0, None)]  # N=0, TEMPERATURE=0: left to the served version
    local = in_process(1, 3)
    local.n, local.temperature, local.weight = chosen.n, chosen.temperature, chosen.weight
    local.window_weight, local.transitions = window_weight, transitions
    expected = local.plan(batch)
    if window_weight:  # the term changes plans here, so the agreement is about it
        local.window_weight = 0.0
        assert [p.cluster_id for p in expected] != [p.cluster_id for p in local.plan(batch)]
    if decay < 1.0:  # and the window's order changes the candidates' scores
        local.window_weight, local.transitions = window_weight, STEP
        assert [p.scores for p in expected] != [p.scores for p in local.plan(batch)]
    assert [p.cluster_id for p in plans] == [p.cluster_id for p in expected]
    assert [p.candidates for p in plans] == [p.candidates for p in expected]
    assert client.selection("v3") == chosen


def test_cached_selection_uses_the_planners_choice_for_the_version() -> None:
    class Cache:
        keep = None  # keeps whole rankings

        def get_many(self, version: str, histories: Sequence[Any]) -> list[Any]:
            return [None] * len(histories)

        def put_many(self, version: str, rankings: Sequence[HistoryRanking]) -> int:
            return len(rankings)

    planner = in_process(1, 3)
    planner.n, planner.weight = 5, 0.0
    cached = CachedPlanner(planner, Cache(), n=16)  # type: ignore[arg-type]
    batch = [request(f"u{i}", (i % CLUSTERS, (i + 2) % CLUSTERS)) for i in range(10)]
    plans = cached.plan(batch)
    assert plans == planner.plan(batch)
    assert all(len(p.candidates) == 5 for p in plans)
    ranking = planner.rank([batch[0].history])[0]
    assert plans[0] == select(batch[0], ranking, 5, planner.model_version, weight=0.0)
    # A recency-weighted window term: the cache selects from the ranking with the window's
    # order, as the planner does.
    planner.window_weight = 4.0
    planner.transitions = WindowTransitions(STEP.scores_by_target, decay=0.5)
    windows = [
        ordered(f"u{i}", (i % CLUSTERS, (i + 2) % CLUSTERS, (i + 7) % CLUSTERS)) for i in range(10)
    ]
    assert cached.plan(windows) == planner.plan(windows)
