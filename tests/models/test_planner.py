"""Best-of-n planning: selection rule, novelty, determinism, batch independence, persistence."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch

from plugin.core.planning import HistoryRanking, PlanningError, PlanRequest, select
from plugin.models.alignment import AlignmentConfig, AlignmentModel
from plugin.models.novelty import NoveltyConfig, NoveltyModel
from plugin.models.planner import BestOfNPlanner
from plugin.models.repository import ModelRepository

T0 = datetime(1998, 1, 1, tzinfo=UTC)
CLUSTERS = 10


def planner(n: int = 4, seed: int = 7) -> BestOfNPlanner:
    torch.manual_seed(0)
    novelty = NoveltyModel(
        NoveltyConfig(n_clusters=CLUSTERS, n_parents=2, parent_of=tuple(c % 2 for c in range(10)))
    )
    alignment = AlignmentModel(AlignmentConfig(n_clusters=CLUSTERS))
    return BestOfNPlanner(novelty, alignment, n=n, temperature=1.5, seed=seed, model_version="t")


def request(user: str, history: tuple[int, ...], excluded: set[int] | None = None) -> PlanRequest:
    return PlanRequest(user, history, frozenset(excluded or set(history)), T0)


def test_select_takes_first_n_novel_in_sampling_order_then_best_alignment() -> None:
    ranking = HistoryRanking(
        history=(0,),
        order=(0, 4, 2, 7, 1),
        novelty_log_probs=(-1.0,) * 5,
        alignment_scores=(9.0, 0.1, 0.5, 0.3, 5.0),
    )
    plan = select(request("u", (0,), {0, 2}), ranking, n=2, model_version="t")
    # Cluster 0 and 2 are excluded; the first two novel are 4 and 7; 7 scores higher.
    assert plan.cluster_id == 7
    assert plan.candidates == (7, 4)
    assert plan.scores == (0.3, 0.1)


def test_select_fails_clearly_when_nothing_is_novel() -> None:
    ranking = HistoryRanking((0,), (0, 1), (0.0, 0.0), (1.0, 1.0))
    with pytest.raises(PlanningError, match="no novel candidate"):
        select(request("u", (0,), {0, 1}), ranking, n=2, model_version="t")


def test_plans_are_novel_have_n_distinct_candidates_and_are_deterministic() -> None:
    requests = [request(f"u{i}", (i % CLUSTERS, (i + 3) % CLUSTERS)) for i in range(20)]
    plans = planner().plan(requests)
    again = planner().plan(requests)
    assert plans == again
    for req, plan in zip(requests, plans, strict=True):
        assert plan.cluster_id not in req.excluded
        assert len(set(plan.candidates)) == len(plan.candidates) == 4
        assert not set(plan.candidates) & req.excluded
        assert plan.scores == tuple(sorted(plan.scores, reverse=True))


def test_a_plan_does_not_depend_on_the_rest_of_its_batch() -> None:
    target = request("u1", (3, 1), {3, 1, 8})
    alone = planner().plan([target])[0]
    crowd = [request(f"x{i}", (i % CLUSTERS,)) for i in range(9)]
    in_batch = planner().plan([*crowd[:4], target, *crowd[4:]])[4]
    assert alone == in_batch


def test_the_seed_changes_the_samples() -> None:
    requests = [request(f"u{i}", (i % CLUSTERS,)) for i in range(20)]
    first = [p.candidates for p in planner(seed=1).plan(requests)]
    second = [p.candidates for p in planner(seed=2).plan(requests)]
    assert first != second


def test_repository_round_trip_keeps_plans(tmp_path: Path) -> None:
    original = planner()
    repository = ModelRepository(tmp_path)
    manifest = {"catalog_version": "abc", "gate": {"passed": True}}
    version = repository.write(original.novelty, original.alignment, manifest)
    assert version == 1
    assert repository.next_version() == 2
    loaded = repository.load()
    assert loaded.version == 1
    assert loaded.manifest["catalog_version"] == "abc"
    copy = BestOfNPlanner(loaded.novelty, loaded.alignment, 4, 1.5, 7, "t")
    requests = [request("u", (2, 5)), request("v", (9,))]
    assert copy.plan(requests) == original.plan(requests)
